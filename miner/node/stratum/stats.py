"""What the pool knows of its miners: shares by worker and verdict, hash rate estimated from
accepted shares over 1, 5 and 15 minutes, the best share, blocks, and how long a new job takes to
reach every miner. Read by the metrics endpoint and the `getstratuminfo` RPC.

A share of difficulty D stands for D * 2^32 hashes on average (difficulty 1 = 0xFFFF * 2^208, so
2^256 / target = D * 2^48 / 0xFFFF, within 0.002% of D * 2^32, the figure every pool uses). The
rate over a window is a decaying average of credited difficulty per second, as ckpool keeps it,
corrected for a worker younger than the window so a new worker is not shown at a fraction of its
rate.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from miner.node.log_writer import unambiguous
from miner.primitives.stratum import StratumError

WINDOWS = (("1m", 60.0), ("5m", 300.0), ("15m", 900.0))
HASHES_PER_DIFFICULTY = 2.0 ** 32
# Worker names remembered. Names are free to make up: past this many, one that never had a share
# accepted is forgotten first (the longest unseen of them), so strangers authorizing fresh names
# cannot push out the figures of workers that did work; only then the longest unseen of all.
MAX_WORKERS_KEPT = 10_000
FORGET_AFTER = 3600.0  # s without a share or a connection: a worker leaves the statistics
BROADCAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

BLOCKS_REMEMBERED = 10_000  # the pool's blocks whose place on the chain is followed; older ones keep their count

REASONS = {  # refusal codes as metric labels
    20: "other", 21: "stale", 22: "duplicate", 23: "low difficulty", 24: "unauthorized", 25: "not subscribed",
}


class DecayingRate:
    """Difficulty per second over a window of `tau` seconds, decaying exponentially."""

    def __init__(self, tau: float, now: float):
        self.tau = tau
        self.value = 0.0
        self.updated = now
        self.started = now

    def _decay(self, now: float) -> None:
        dt = max(0.0, now - self.updated)
        self.value *= math.exp(-dt / self.tau)
        self.updated = now

    def add(self, difficulty: float, now: float) -> None:
        self._decay(now)
        self.value += difficulty / self.tau

    def raw(self, now: float) -> float:
        """The decayed sum alone, without the correction for a young window: these add up, so
        the pool's is the sum of its workers'."""
        self._decay(now)
        return self.value

    def rate(self, now: float) -> float:
        self._decay(now)
        age = now - self.started
        warmed = 1.0 - math.exp(-age / self.tau) if age > 0 else 0.0
        return self.value / warmed if warmed > 1e-9 else 0.0


@dataclass
class WorkerStats:
    name: str
    first_seen: float
    last_seen: float
    accepted: int = 0
    accepted_difficulty: float = 0.0  # the sum credited
    refused: dict[str, int] = field(default_factory=dict)
    blocks: int = 0
    best_share: float = 0.0  # the highest difficulty a share of this worker achieved
    last_share: float | None = None  # wall clock
    difficulty: float = 0.0  # the last difficulty its connection was given
    rates: list[DecayingRate] = field(default_factory=list)

    def hashrates(self, now: float, per_difficulty: float) -> dict[str, float]:
        """Hashes a second by window; `per_difficulty` is the chain's (no default: a scrypt
        pool shown at SHA-256d's 2^32 would read 65,536 times too high)."""
        return {label: r.rate(now) * per_difficulty for (label, _), r in zip(WINDOWS, self.rates)}


class PoolStats:
    def __init__(self, clock=time.monotonic, wall=time.time, hashes_per_difficulty: float = HASHES_PER_DIFFICULTY):
        """`hashes_per_difficulty`: the hashes one difficulty-1 share stands for (2^32 for
        SHA-256d; 2^16 for scrypt, whose pools count difficulty 65,536 times easier)."""
        self.hashes_per_difficulty = hashes_per_difficulty
        self.clock = clock
        self.rates = [DecayingRate(tau, clock()) for _, tau in WINDOWS]  # the whole pool's, by window
        self.wall = wall
        self.workers: OrderedDict[str, WorkerStats] = OrderedDict()  # least recently seen first
        self._unproven: OrderedDict[str, None] = OrderedDict()  # names with no accepted share, likewise
        self.accepted = 0
        self.refused: dict[str, int] = {}
        self.blocks = 0  # blocks the chain stored from shares, on the active chain or not
        self.found: OrderedDict[bytes, int] = OrderedDict()  # the newest blocks' hashes -> heights
        self.orphaned: set[bytes] = set()  # of those, the ones off the active chain at the last count
        self.orphaned_forgotten = 0  # blocks that were orphaned when they left `found`
        self.best_share = 0.0
        self.dropped: dict[str, int] = {}  # connections the server ended, by reason
        self.broadcast_buckets = [0] * (len(BROADCAST_BUCKETS) + 1)  # the last is +Inf
        self.broadcast_sum = 0.0
        self.broadcasts = 0

    def worker(self, name: str) -> WorkerStats:
        now = self.clock()
        stats = self.workers.get(name)
        if stats is None:
            stats = WorkerStats(name, now, now, rates=[DecayingRate(tau, now) for _, tau in WINDOWS])
            self.workers[name] = stats
            self._unproven[name] = None
            self._forget(now)
        else:
            self.workers.move_to_end(name)
            if name in self._unproven:
                self._unproven.move_to_end(name)
            stats.last_seen = now
        return stats

    def _forget(self, now: float) -> None:
        while len(self.workers) > MAX_WORKERS_KEPT:
            name = next(iter(self._unproven), None) or next(iter(self.workers))
            del self.workers[name]
            self._unproven.pop(name, None)
        while self.workers:
            oldest = next(iter(self.workers.values()))
            if now - oldest.last_seen < FORGET_AFTER:
                return
            del self.workers[oldest.name]
            self._unproven.pop(oldest.name, None)

    def share_accepted(self, worker: str, credited: float, achieved: float, block: bool,
                       difficulty: float) -> None:
        stats = self.worker(worker)
        self._unproven.pop(worker, None)
        now = stats.last_seen
        stats.accepted += 1
        stats.accepted_difficulty += credited
        stats.best_share = max(stats.best_share, achieved)
        stats.last_share = self.wall()
        stats.difficulty = difficulty
        stats.blocks += block
        for rate in (*stats.rates, *self.rates):
            rate.add(credited, now)
        self.accepted += 1
        self.best_share = max(self.best_share, achieved)

    def block_found(self, block_hash: bytes, height: int, worker: str) -> None:
        """The chain stored a block from a share of `worker` (which side it is on comes from
        `block_status`)."""
        self.blocks += 1
        self.found[block_hash] = height
        while len(self.found) > BLOCKS_REMEMBERED:
            old, _ = self.found.popitem(last=False)
            if old in self.orphaned:
                self.orphaned.discard(old)
                self.orphaned_forgotten += 1

    def found_hashes(self) -> list[bytes]:
        return list(self.found)

    def block_status(self, active: set[bytes]) -> list[tuple[bytes, int]]:
        """Record which found blocks are on the active chain; the (hash, height) of those that
        have just left it."""
        now_orphaned = {h for h in self.found if h not in active}
        newly = [(h, self.found[h]) for h in self.found if h in now_orphaned and h not in self.orphaned]
        self.orphaned = now_orphaned
        return newly

    @property
    def blocks_orphaned(self) -> int:
        return len(self.orphaned) + self.orphaned_forgotten

    def share_refused(self, worker: str | None, error: StratumError) -> None:
        reason = REASONS.get(error.code, "other")
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if worker is not None:
            stats = self.worker(worker)
            stats.refused[reason] = stats.refused.get(reason, 0) + 1

    def connection_dropped(self, reason: str) -> None:
        """The server ended a connection for `reason` (a short label: "refused shares", ...)."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def broadcast(self, seconds: float) -> None:
        """A job reached every miner it was sent to in `seconds`."""
        self.broadcasts += 1
        self.broadcast_sum += seconds
        for i, bound in enumerate(BROADCAST_BUCKETS):
            if seconds <= bound:
                self.broadcast_buckets[i] += 1
                return
        self.broadcast_buckets[-1] += 1

    def hashrates(self, stats: WorkerStats, now: float) -> dict[str, float]:
        """A worker's hash rate by window, at this pool's hashes per difficulty-1 share."""
        return stats.hashrates(now, self.hashes_per_difficulty)

    def worker_report(self, stats: WorkerStats, connected: bool) -> dict:
        now = self.clock()
        return {"worker": unambiguous(stats.name), "connected": connected, "difficulty": stats.difficulty,
                "accepted": stats.accepted, "rejected": dict(stats.refused), "blocks": stats.blocks,
                "best_share": stats.best_share, "last_share": stats.last_share,
                "hashrate": self.hashrates(stats, now)}

    def report(self, connections: int, connected: set[str], network_difficulty: float,
               job_age: float | None) -> dict:
        return {"connections": connections, "workers_connected": len(connected),
                "accepted": self.accepted, "rejected": dict(self.refused), "dropped": dict(self.dropped),
                "blocks": self.blocks, "blocks_active": self.blocks - self.blocks_orphaned,
                "blocks_orphaned": self.blocks_orphaned,
                "best_share": self.best_share, "network_difficulty": network_difficulty, "job_age": job_age,
                "workers": [self.worker_report(w, w.name in connected) for w in reversed(self.workers.values())]}
