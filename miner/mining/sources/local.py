"""The embedded local chain as a work source: jobs from its tip, solutions appended to it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from miner.chain.chain import Chain
from miner.chain.clock import check_clock
from miner.errors import InvalidBlock
from miner.mining.sources.base import Submitted
from miner.mining.work import Job, Solution
from miner.primitives.coinbase import coinbase_template
from miner.primitives.compact import bits_to_target
from miner.primitives.hashes import display_hex

log = logging.getLogger(__name__)


class LocalChainSource:
    """Builds a job on the chain tip; `submit` appends the block, which the chain validates."""

    def __init__(self, chain: Chain, clock: Callable[[], float] = time.time,
                 message: bytes = b"pow-miner"):
        self.chain = chain
        self.clock = clock
        self.message = message
        self.failure = None  # a file never goes away: nothing to give up on
        self._on_job: Callable[[Job], None] | None = None

    def job(self) -> Job:
        height = self.chain.height + 1
        bits = self.chain.next_bits()
        now = int(self.clock())
        check_clock(self.chain, now)  # no valid block can exist yet: say so, never spin
        block_time = max(now, self.chain.min_next_time())
        return Job(
            job_id=f"{height}-{display_hex(self.chain.tip_hash)[:16]}",
            height=height,
            version=0x20000000,
            prev_hash=self.chain.tip_hash,
            coinbase=coinbase_template(height, self.message),
            branch=(),
            time=block_time,
            bits=bits,
            target=bits_to_target(bits, self.chain.params.pow_limit),
            pow=self.chain.params.pow,
        )

    def start(self, on_job: Callable[[Job], None]) -> None:
        self._on_job = on_job
        on_job(self.job())

    def solved(self, job: Job) -> None:
        if self._on_job is not None:
            self._on_job(self.job())

    def stop(self) -> None:
        self._on_job = None

    def submit(self, solution: Solution) -> Submitted | None:
        """Append the solved block; the chain validates it in full."""
        try:
            return Submitted(self.append(solution), True)
        except InvalidBlock as exc:
            # Another miner extended the chain first: pick up its tip and carry on.
            log.warning("block not appended: %s", exc)
            self.chain.refresh()
            return None

    def append(self, solution: Solution) -> int:
        """Append the solved block; returns its height (raises what the chain raises)."""
        return self.chain.append(solution.block(), now=int(self.clock()))
