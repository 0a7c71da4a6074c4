"""The `miner mine` loop: coordinator + work source + per-block reporting."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from .coordinator import Coordinator
from .errors import InvalidBlock
from .header import bits_to_target, difficulty
from .sources.local import LocalChainSource
from .work import Job, Solution

log = logging.getLogger(__name__)


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


def mine_blocks(coordinator: Coordinator, source: LocalChainSource, blocks: int,
                on_block: Callable[[BlockFound], None],
                poll: float = 0.25,
                on_job: Callable[[Job], None] | None = None) -> list[BlockFound]:
    """Mine `blocks` blocks on the local chain. The coordinator must be started."""
    found: list[BlockFound] = []
    while len(found) < blocks:
        job = source.job()
        if on_job is not None:
            on_job(job)
        hashes_before = sum(s.hashes for s in coordinator.stats.values())
        t0 = time.perf_counter()
        coordinator.set_job(job)
        solution = None
        while solution is None:
            solution = coordinator.wait_solution(timeout=poll)
        seconds = time.perf_counter() - t0
        try:
            height = source.submit(solution)
        except InvalidBlock as exc:
            # Another miner extended the chain first: pick up its tip and carry on.
            log.warning("block not appended: %s", exc)
            source.chain.refresh()
            continue
        hashes = sum(s.hashes for s in coordinator.stats.values()) - hashes_before
        event = _found(solution, height, seconds, hashes)
        found.append(event)
        on_block(event)
    coordinator.set_job(None)
    return found


def _found(solution: Solution, height: int, seconds: float, hashes: int, verdict: str = "") -> BlockFound:
    header = solution.header
    return BlockFound(height, header.hash_hex(), solution.nonce, solution.extranonce, header.bits,
                      difficulty(bits_to_target(header.bits)), seconds, hashes, solution.backend,
                      verdict)


def mine_from_node(coordinator: Coordinator, source, blocks: int,
                   on_block: Callable[[BlockFound], None],
                   on_job: Callable[[Job], None] | None = None,
                   poll: float = 0.25) -> list[BlockFound]:
    """Mine until the node has accepted `blocks` of our blocks. `source` is a TemplateSource:
    its long poll replaces the job the moment the node has new work; every solution is submitted
    and the node's verdict reported, accepted or not. The coordinator must be started."""
    accepted: list[BlockFound] = []
    since, hashes_before = time.perf_counter(), 0  # the last submission: rate per block from here

    def new_job(job: Job) -> None:
        coordinator.set_job(job)
        if on_job is not None:
            on_job(job)

    source.offer(source.fetch(), new_job)
    source.start_long_poll(new_job)
    try:
        while len(accepted) < blocks:
            solution = coordinator.wait_solution(timeout=poll)
            if solution is None:
                continue
            hashes = sum(s.hashes for s in coordinator.stats.values())
            seconds = time.perf_counter() - since
            verdict = source.submit(solution)
            event = _found(solution, solution.job.height, seconds, hashes - hashes_before,
                           "accepted" if verdict is None else str(verdict))
            on_block(event)
            if verdict is None:
                accepted.append(event)
            since, hashes_before = time.perf_counter(), hashes
            # The solved job is finished whatever the verdict: fresh work now, not at the next poll.
            source.offer(source.fetch(), new_job, solved=solution.job)
    finally:
        source.stop()
        coordinator.set_job(None)
    return accepted
