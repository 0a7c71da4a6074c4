"""The coordinator: runs every backend at once on the current job, in disjoint work units.

One worker thread per backend pulls units from a shared `NonceAllocator`, so within a job no
nonce is searched twice and none is skipped; when a job's 2^32 nonces are used up the allocator
moves to the next extranonce (a new coinbase, merkle root and midstate) and the backends never
notice. Unit sizes follow each backend's measured rate so one unit takes about `unit_seconds`,
which keeps per-unit overhead small; cancellation (below) keeps new jobs from waiting on it.

A new job bumps a generation counter: hits from units of an older generation are dropped, never
submitted. The first verified hit of a job ends the search for that job, except a pool's job
(`Job.shares`): each of its hits is a share, and the search goes on until new work comes or the
caller ends it (`end_job`, once the pool has taken a block). Either way the old job's
cancel event is set, and every backend in the middle of one of its units stops at its next check
(about every 50 ms of work) instead of finishing the unit. A backend also stops its unit at the
first piece with a verified hit, so a solution reaches the chain without waiting for the unit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from miner.backends.base import Backend, SearchResult
from miner.backends.work import NONCE_SPACE, KernelWork
from miner.mining.work import Job, Solution

if TYPE_CHECKING:
    from typing_extensions import Self  # annotations only: never imported at run time

log = logging.getLogger(__name__)

MIN_UNIT = 1 << 12
MAX_UNIT = NONCE_SPACE


@dataclass(frozen=True)
class WorkUnit:
    job: Job
    work: KernelWork
    generation: int
    nonce_start: int
    count: int
    cancel: threading.Event = field(compare=False, repr=False)  # the job's; set when it ends

    @property
    def extranonce(self) -> int:
        return self.work.extranonce


class NonceAllocator:
    """Hands out disjoint nonce ranges of one job, rolling the extranonce when 2^32 is used up."""

    def __init__(self, job: Job, generation: int, first_extranonce: int = 0,
                 nonce_space: int = NONCE_SPACE, budget: int | None = None):
        """`budget`: hand out at most this many nonces of the job in all (generatetoaddress's
        `maxtries`, which Core spends one nonce at a time and never overruns); None: no limit."""
        self.job = job
        # Set when the job is replaced or solved: units of it in flight stop at their next check.
        self.cancel = threading.Event()
        self.nonce_space = nonce_space
        self.generation = generation
        self.extranonce = first_extranonce
        self.next_nonce = 0
        self._work = job.work(first_extranonce)
        self.budget_left = budget
        self.exhausted = False
        self._lock = threading.Lock()

    def retarget(self, job: Job) -> None:
        """The same job with another target, from where the search is (units already handed
        out keep the old target)."""
        with self._lock:
            self.job = job
            self._work = job.work(self.extranonce)

    def take(self, count: int) -> WorkUnit | None:
        with self._lock:
            if self.exhausted:
                return None
            if self.budget_left == 0:
                self.exhausted = True
                return None
            if self.next_nonce >= self.nonce_space:
                if self.extranonce >= self.job.max_extranonce:
                    self.exhausted = True
                    return None
                self.extranonce += 1
                self.next_nonce = 0
                self._work = self.job.work(self.extranonce)
            count = min(count, self.nonce_space - self.next_nonce)
            if self.budget_left is not None:
                count = min(count, self.budget_left)
                self.budget_left -= count
            unit = WorkUnit(self.job, self._work, self.generation, self.next_nonce, count, self.cancel)
            self.next_nonce += count
            return unit


@dataclass
class BackendStats:
    hashes: int = 0
    # Nonces that failed, as Bitcoin Core counts `maxtries`: every nonce of a search without a
    # hit, and of one with a hit only those before its first hit (Core stops there; a kernel hashes
    # the rest of its piece, but those hashes are not tries)
    tries: int = 0
    seconds: float = 0.0
    hits: int = 0
    rejected: int = 0
    stale: int = 0
    units: int = 0
    rate: float = 0.0  # hashes/s, exponentially weighted over recent units
    last_job_start: float = 0.0  # when this backend began its first unit of the current job


@dataclass

class CoordinatorEvent:
    kind: str  # "unit", "solution", "stale"
    backend: str
    unit: WorkUnit
    result: SearchResult | None = None
    extra: dict = field(default_factory=dict)


class Coordinator:
    """Runs `backends` in parallel on the job given to `set_job` until stopped."""

    def __init__(self, backends: Sequence[Backend], unit_seconds: float = 0.25,
                 on_event: Callable[[CoordinatorEvent], None] | None = None,
                 max_unit: int = MAX_UNIT, nonce_space: int = NONCE_SPACE):
        """`nonce_space` below 2^32 rolls the extranonce sooner (for tests and small ranges)."""
        # No backend at first is allowed: backends may join a running coordinator (add_backend).
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique: {names}")
        self.backends = list(backends)
        self.unit_seconds = unit_seconds
        self.max_unit = max_unit
        self.nonce_space = nonce_space
        self.on_event = on_event
        self.stats = {b.name: BackendStats() for b in backends}
        self.solutions: queue.Queue[Solution] = queue.Queue()
        self._cond = threading.Condition()
        self._alloc: NonceAllocator | None = None
        self._generation = 0
        self._in_flight = 0  # units handed out and not yet ended, of any job
        self._job_set_at = 0.0
        self._stopping = False
        self._started = False
        self._retired: set[str] = set()
        self._failure: BaseException | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ control

    def start(self) -> Coordinator:
        with self._cond:
            self._started = True
            for backend in self.backends:
                self._start_worker(backend)
        return self

    def _start_worker(self, backend: Backend) -> None:
        t = threading.Thread(target=self._worker, args=(backend,), name=f"miner-{backend.name}", daemon=True)
        t.start()
        self._threads.append(t)

    def add_backend(self, backend: Backend) -> None:
        """A backend that became ready while mining (its kernel compiled in the background)
        joins at once: it takes the next unit of the current job."""
        with self._cond:
            if backend.name in self.stats:
                raise ValueError(f"backend names must be unique: {backend.name}")
            self.stats[backend.name] = BackendStats()
            self.backends.append(backend)
            if self._started and not self._stopping:
                self._start_worker(backend)

    def retire(self, name: str, wait: float = 0.0) -> None:
        """Stop giving `name` units (a stand-in whose place a faster backend took); its unit in
        flight is finished and counted, its figures stay in the totals. `wait`: seconds to wait
        for that unit to end (the CPU is then free of it, for a timing that must not share it)."""
        with self._cond:
            self._retired.add(name)
            self._cond.notify_all()
            workers = [t for t in self._threads if t.name == f"miner-{name}"]
        for t in workers:
            if wait > 0 and t is not threading.current_thread():
                t.join(wait)

    def fail(self, error: BaseException) -> None:
        """Something the run depends on failed outside the workers (a kernel that would not
        compile): `wait_solution` raises it."""
        self._failure = error

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking units; cancels the units in flight and waits for them to return."""
        with self._cond:
            self._stopping = True
            if self._alloc is not None:
                self._alloc.cancel.set()
            self._alloc = None
            self._cond.notify_all()
        for t in list(self._threads):
            t.join(timeout)
        self._threads.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_job(self, job: Job | None, first_extranonce: int = 0, budget: int | None = None) -> int:
        """Replace the current job (None pauses); work of older jobs becomes stale at once.
        `budget`: search at most that many nonces of it (see `NonceAllocator`, and `searched_out`)."""
        with self._cond:
            if self._alloc is not None:
                self._alloc.cancel.set()
            self._generation += 1
            self._alloc = (NonceAllocator(job, self._generation, first_extranonce, self.nonce_space, budget)
                           if job else None)
            self._job_set_at = time.perf_counter()
            for s in self.stats.values():
                s.last_job_start = 0.0
            self._cond.notify_all()
            return self._generation

    def end_job(self, job: Job) -> bool:
        """Stop searching `job` if it is still current (a pool took our block: its next work
        follows); False if another job is current already."""
        with self._cond:
            alloc = self._alloc
            if alloc is None or alloc.job.job_id != job.job_id or alloc.job.prev_hash != job.prev_hash:
                return False
            alloc.cancel.set()
            self._alloc = None
            return True

    def retarget(self, job: Job) -> bool:
        """Give the current job a new target (a pool's new share difficulty) without starting it
        over: the search goes on where it was, so no nonce is hashed twice. `job` must be the
        current job with only its target changed; False (nothing done) if another job is
        current."""
        with self._cond:
            alloc = self._alloc
            if alloc is None or alloc.job.job_id != job.job_id or alloc.job.prev_hash != job.prev_hash:
                return False
            alloc.retarget(job)
            return True

    @property
    def generation(self) -> int:
        return self._generation

    def wait_solution(self, timeout: float | None = None) -> Solution | None:
        if self._failure is not None:
            raise self._failure
        try:
            return self.solutions.get(timeout=timeout)
        except queue.Empty:
            return None

    def searched_out(self) -> bool:
        """Whether nothing more can come of the current job: its nonces (or its budget) are all
        handed out and every unit has ended, or no worker is left (every backend failed), so any
        solution is already in `solutions`. A caller with a budget waits for this rather than for
        a count of tries, which a failed backend's abandoned unit would never complete."""
        with self._cond:
            if not any(t.is_alive() for t in self._threads):
                return True
            return (self._alloc is None or self._alloc.exhausted) and self._in_flight == 0

    def tries(self) -> int:
        """Nonces tried and failed, over all backends (`BackendStats.tries`)."""
        return sum(s.tries for s in self.stats.values())

    def total_rate(self) -> float:
        return sum(s.rate for s in self.stats.values())

    def job_latency(self) -> float | None:
        """Seconds from the last `set_job` until every backend had started a unit of it."""
        starts = [s.last_job_start for s in self.stats.values()]
        if not all(starts):
            return None
        return max(starts) - self._job_set_at

    # ------------------------------------------------------------------ workers

    def _unit_size(self, backend: Backend) -> int:
        rate = self.stats[backend.name].rate
        if rate <= 0:
            return min(backend.initial_batch, self.max_unit)
        return int(min(max(rate * self.unit_seconds, MIN_UNIT), self.max_unit))

    def _next_unit(self, backend: Backend) -> WorkUnit | None:
        with self._cond:
            while not self._stopping and backend.name not in self._retired:
                alloc = self._alloc
                if alloc is not None and not alloc.exhausted:
                    unit = alloc.take(self._unit_size(backend))
                    if unit is not None:
                        stats = self.stats[backend.name]
                        if not stats.last_job_start:
                            stats.last_job_start = time.perf_counter()
                        self._in_flight += 1
                        return unit
                    # The job stays current: hits of its units still in flight count.
                    if alloc.budget_left != 0:  # a spent budget is the caller's limit, not a fault
                        log.warning("job %s: extranonce space exhausted", alloc.job.job_id)
                self._cond.wait()
            return None

    def _worker(self, backend: Backend) -> None:
        while True:
            unit = self._next_unit(backend)
            if unit is None:
                return
            try:
                if not self._search_unit(backend, unit):
                    return
            finally:
                with self._cond:
                    self._in_flight -= 1

    def _search_unit(self, backend: Backend, unit: WorkUnit) -> bool:
        """Search one unit; False if the backend failed."""
        start, count = unit.nonce_start, unit.count
        while True:
            result = self._search(backend, unit, start, count)
            if result is None:
                return False
            if result.nonces:
                self._report(backend, unit, result)
            # A pool's share does not end the job: the rest of the unit is searched, so no
            # nonce after a share is skipped (a share can also be the block).
            start, count = start + result.count, count - result.count
            if not unit.job.shares or count <= 0 or unit.cancel.is_set():
                return True

    def _search(self, backend: Backend, unit: WorkUnit, start: int, count: int) -> SearchResult | None:
        """Search part of `unit` and count it; None if the backend failed."""
        stats = self.stats[backend.name]
        t0 = time.perf_counter()
        try:
            result = backend.search(unit.work, start, count, unit.cancel, stop_on_hit=True)
        except Exception:  # a broken device must not take the others down
            log.exception("backend %s failed; it stops mining", backend.name)
            return None
        dt = time.perf_counter() - t0
        result.seconds = dt
        stats.hashes += result.count  # less than asked if it was cancelled or stopped at a hit
        stats.tries += result.nonces[0] - start if result.nonces else result.count
        stats.seconds += dt
        stats.units += 1
        stats.hits += result.total
        stats.rejected += result.rejected
        if dt > 0 and result.count == unit.count:  # a cut-short unit's rate is not representative
            inst = unit.count / dt
            stats.rate = inst if stats.rate == 0 else 0.7 * stats.rate + 0.3 * inst
            backend.measured_rate = stats.rate
        if result.rejected:
            log.error("backend %s: %d candidates failed the host re-check", backend.name,
                      result.rejected)
        self._emit(CoordinatorEvent("unit", backend.name, unit, result))
        return result

    def _report(self, backend: Backend, unit: WorkUnit, result: SearchResult) -> None:
        with self._cond:
            current = self._alloc is not None and self._generation == unit.generation
            if current and unit.job.shares:
                # Every share counts and the job goes on, a block among them too: a pool may
                # refuse it, and only the pool's new work (or `end_job`) ends the search.
                for nonce in result.nonces:
                    self.solutions.put(Solution(unit.job, unit.extranonce, nonce, backend.name))
            elif current:
                # First valid solution wins; the job is done, so nobody takes more of its units
                # and the units of it in flight stop at their next check.
                self._alloc.cancel.set()
                self._alloc = None
                self.solutions.put(Solution(unit.job, unit.extranonce, result.nonces[0], backend.name))
        if current:
            self._emit(CoordinatorEvent("solution", backend.name, unit, result))
        else:
            self.stats[backend.name].stale += len(result.nonces)
            self._emit(CoordinatorEvent("stale", backend.name, unit, result))

    def _emit(self, event: CoordinatorEvent) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("event handler failed")
