"""The mining loop: one coordinator, one work source, a report per block."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from miner.consensus.pow import algorithm
from miner.mining.coordinator import Coordinator
from miner.mining.sources.base import WorkSource
from miner.mining.work import Job, Solution, own_extranonce_start
from miner.primitives.compact import bits_to_target, difficulty
from miner.primitives.stratum import diff1_target


@dataclass
class BlockFound:
    height: int
    hash_hex: str
    nonce: int
    extranonce: int
    bits: int
    difficulty: float
    seconds: float
    hashes: int  # by every backend, over the block's `seconds`
    backend: str
    verdict: str = ""  # mining a node: its submitblock answer ("accepted", or Core's reason)
    # The finding backend's own recent rate when it found the block. The block line shows this,
    # so a block hashlib found is not credited with the compiled kernel's speed, nor the reverse
    # (the block's mean `rate` mixes every backend, and the time before one joined).
    backend_rate: float = 0.0

    @property
    def rate(self) -> float:
        """The block's mean rate: every backend's hashes over the block's wall time."""
        return self.hashes / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ShareFound:
    """A pool's share that is not a block, with the pool's verdict."""

    height: int
    job_id: str
    hash_hex: str
    nonce: int
    extranonce: int
    difficulty: float  # what the hash achieved, as the pool counts it (sha256d: 1 = 0xFFFF * 2^208)
    target_difficulty: float  # what the job asked for
    accepted: bool
    verdict: str
    backend: str


class ShareTally:
    """A pool's verdicts on our shares: accepted, rejected with the reasons given, blocks, and
    the best share."""

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0
        self.blocks = 0
        self.best = 0.0
        self.reasons: dict[str, int] = {}

    def add(self, accepted: bool, verdict: str, difficulty: float = 0.0, block: bool = False) -> None:
        if accepted:
            self.accepted += 1
            self.blocks += block
            self.best = max(self.best, difficulty)
        else:
            self.rejected += 1
            self.reasons[verdict] = self.reasons.get(verdict, 0) + 1

    def as_dict(self) -> dict:
        return {"accepted": self.accepted, "rejected": self.rejected, "reasons": dict(self.reasons),
                "blocks": self.blocks, "best": self.best}


def mine(coordinator: Coordinator, source: WorkSource, blocks: int,
         on_block: Callable[[BlockFound], None],
         on_job: Callable[[Job], None] | None = None,
         poll: float = 0.25, shares: int = 0,
         on_share: Callable[[ShareFound], None] | None = None) -> list[BlockFound]:
    """Mine until `source` has accepted `blocks` of our blocks, or `shares` of our shares (a
    pool's; 0 for either: no such limit, and with both 0 until interrupted). The source
    announces jobs (the first, and each one that replaces it); every solution is submitted and
    its verdict reported, accepted or not, except one the source dropped unjudged. The
    coordinator must be started."""
    accepted: list[BlockFound] = []
    shares_accepted = 0
    current: list[Job | None] = [None]

    def hashes_so_far() -> int:
        return sum(s.hashes for s in coordinator.stats.values())

    def backend_rate(name: str) -> float:
        """`name`'s own recent rate (the coordinator's average over its last whole units), or
        its hashes over its search time before it has finished a whole unit."""
        stats = coordinator.stats.get(name)
        if stats is None:
            return 0.0
        return stats.rate or (stats.hashes / stats.seconds if stats.seconds > 0 else 0.0)

    def new_job(job: Job | None) -> None:
        before, current[0] = current[0], job
        if job is None:
            coordinator.set_job(None)
            return
        # A pool's new difficulty for the job at work: the search goes on where it was.
        same = (before is not None and job.shares and before.job_id == job.job_id
                and before.prev_hash == job.prev_hash)
        if not (same and coordinator.retarget(job)):
            coordinator.set_job(job, own_extranonce_start(job))
        if on_job is not None:
            on_job(job)

    def done() -> bool:
        return ((blocks > 0 and len(accepted) >= blocks) or (shares > 0 and shares_accepted >= shares))

    since, hashes_before = time.perf_counter(), hashes_so_far()  # rate per block from here
    source.start(new_job)
    try:
        while not done():
            if source.failure is not None:
                raise source.failure
            solution = coordinator.wait_solution(timeout=poll)
            if solution is None:
                continue
            hashes, seconds = hashes_so_far(), time.perf_counter() - since
            own_rate = backend_rate(solution.backend)
            result = source.submit(solution)
            if result is not None and result.kind == "share":
                shares_accepted += result.accepted
                if on_share is not None:
                    on_share(_share(solution, result.height, result.accepted, result.verdict))
                continue  # a share does not end the job
            if result is not None:
                event = _found(solution, result.height, seconds, hashes - hashes_before, result.verdict, own_rate)
                on_block(event)
                if result.accepted:
                    accepted.append(event)
                    shares_accepted += solution.job.shares
                since, hashes_before = time.perf_counter(), hashes
            if solution.job.shares:
                # A pool's block ends its job only once the pool took it (new work follows); a
                # refused one leaves the job searched on, since the pool sends nothing new.
                if result is not None and result.accepted:
                    coordinator.end_job(solution.job)
                continue
            if not done():
                # The solved job is finished whatever the verdict: fresh work now, not at the next poll.
                source.solved(solution.job)
    finally:
        source.stop()
        coordinator.set_job(None)
    return accepted


def _share(solution: Solution, height: int, accepted: bool, verdict: str) -> ShareFound:
    """A pool's verdict, with the share's and the job's difficulty as the pool counts them (by
    the proof-of-work hash; scrypt pools' difficulty 1 is 65,536 times easier)."""
    header = solution.header
    pow = solution.job.pow
    value = int.from_bytes(algorithm(pow).hash(header.serialize()), "little")
    diff1 = diff1_target(pow)
    return ShareFound(height, solution.job.job_id, header.hash_hex(), solution.nonce, solution.extranonce,
                      diff1 / max(value, 1), diff1 / solution.job.target, accepted, verdict,
                      solution.backend)


def _found(solution: Solution, height: int, seconds: float, hashes: int, verdict: str,
           backend_rate: float) -> BlockFound:
    header = solution.header
    return BlockFound(height, header.hash_hex(), solution.nonce, solution.extranonce, header.bits,
                      difficulty(bits_to_target(header.bits)), seconds, hashes, solution.backend,
                      verdict, backend_rate)
