"""The mining loop: one coordinator, one work source, a report per block."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from miner.mining.coordinator import Coordinator
from miner.mining.sources.base import WorkSource
from miner.mining.work import Job, Solution, own_extranonce_start
from miner.primitives.compact import bits_to_target, difficulty


@dataclass
class BlockFound:
    height: int
    hash_hex: str
    nonce: int
    extranonce: int
    bits: int
    difficulty: float
    seconds: float
    hashes: int
    backend: str
    verdict: str = ""  # mining a node: its submitblock answer ("accepted", or Core's reason)

    @property
    def rate(self) -> float:
        return self.hashes / self.seconds if self.seconds > 0 else 0.0


def mine(coordinator: Coordinator, source: WorkSource, blocks: int,
         on_block: Callable[[BlockFound], None],
         on_job: Callable[[Job], None] | None = None,
         poll: float = 0.25) -> list[BlockFound]:
    """Mine until `source` has accepted `blocks` of our blocks. The source announces jobs (the
    first, and each one that replaces it); every solution is submitted and its verdict reported,
    accepted or not, except one the source dropped unjudged. The coordinator must be started."""
    accepted: list[BlockFound] = []

    def hashes_so_far() -> int:
        return sum(s.hashes for s in coordinator.stats.values())

    def new_job(job: Job) -> None:
        coordinator.set_job(job, own_extranonce_start(job))
        if on_job is not None:
            on_job(job)

    since, hashes_before = time.perf_counter(), hashes_so_far()  # rate per block from here
    source.start(new_job)
    try:
        while len(accepted) < blocks:
            solution = coordinator.wait_solution(timeout=poll)
            if solution is None:
                continue
            hashes, seconds = hashes_so_far(), time.perf_counter() - since
            result = source.submit(solution)
            if result is not None:
                event = _found(solution, result.height, seconds, hashes - hashes_before, result.verdict)
                on_block(event)
                if result.accepted:
                    accepted.append(event)
                since, hashes_before = time.perf_counter(), hashes
            if len(accepted) < blocks:
                # The solved job is finished whatever the verdict: fresh work now, not at the next poll.
                source.solved(solution.job)
    finally:
        source.stop()
        coordinator.set_job(None)
    return accepted


def _found(solution: Solution, height: int, seconds: float, hashes: int, verdict: str) -> BlockFound:
    header = solution.header
    return BlockFound(height, header.hash_hex(), solution.nonce, solution.extranonce, header.bits,
                      difficulty(bits_to_target(header.bits)), seconds, hashes, solution.backend,
                      verdict)
