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
from .work import Job

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
        header = solution.header
        event = BlockFound(height, header.hash_hex(), solution.nonce, solution.extranonce,
                           header.bits, difficulty(bits_to_target(header.bits)), seconds, hashes,
                           solution.backend)
        found.append(event)
        on_block(event)
    coordinator.set_job(None)
    return found

