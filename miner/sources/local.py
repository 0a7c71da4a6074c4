"""The embedded local chain as a work source: jobs from its tip, solutions appended to it."""

from __future__ import annotations

import time
from typing import Callable

from ..chain import Chain
from ..header import bits_to_target
from ..tx import coinbase_template
from ..work import Job, Solution


class LocalChainSource:
    """Builds a job on the chain tip; `submit` re-checks the solution and appends the block."""

    def __init__(self, chain: Chain, clock: Callable[[], float] = time.time,
                 message: bytes = b"pow-miner"):
        self.chain = chain
        self.clock = clock
        self.message = message

    def job(self) -> Job:
        height = self.chain.height + 1
        bits = self.chain.next_bits()
        now = int(self.clock())
        self.chain.check_clock(now)  # no valid block can exist yet: say so, never spin
        block_time = max(now, self.chain.min_next_time())
        return Job(
            job_id=f"{height}-{self.chain.tip_hash[::-1].hex()[:16]}",
            height=height,
            version=0x20000000,
            prev_hash=self.chain.tip_hash,
            coinbase=coinbase_template(height, self.message),
            branch=(),
            time=block_time,
            bits=bits,
            target=bits_to_target(bits, self.chain.params.pow_limit),
        )

    def is_current(self, job: Job) -> bool:
        return job.prev_hash == self.chain.tip_hash

    def submit(self, solution: Solution) -> int:
        """Append the solved block; the chain validates it in full. Returns its height."""
        return self.chain.append(solution.header, solution.txs, now=int(self.clock()))
