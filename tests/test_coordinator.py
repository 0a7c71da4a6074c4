"""The coordinator with real backends: exactly-once coverage, extranonce rolls, stale work."""

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from support.jobs import make_job

from miner.backends.cpu import CpuBackend
from miner.backends.ref import ReferenceBackend, reference_hits
from miner.mining.coordinator import Coordinator, NonceAllocator


def test_every_nonce_hashed_exactly_once_across_extranonce_roll(host_builds):
    # Large enough that the job outlasts several GIL switch intervals (5 ms) and a slow start of the
    # CPU threads: with 2^16 and 2^18 the pure-Python reference used up the whole job (0.2 s and
    # 0.7 s of its hashing) in fresh-clone CI runs before the CPU backends had searched a second
    # unit. Every backend first searches a unit of another job (below), so start-up is behind it.
    space = 1 << 20
    first = 253  # extranonces 253, 254, 255: two rolls, then the 1-byte extranonce space ends
    counts = {x: np.zeros(space, dtype=np.int64) for x in (253, 254, 255)}
    lock = threading.Lock()
    per_backend = {}

    primed: set[str] = set()

    def on_event(ev):
        if ev.kind == "unit" and ev.unit.job.job_id == "prime":
            primed.add(ev.backend)
        elif ev.kind == "unit":
            with lock:  # what was really searched: a cancelled unit reports a shorter count
                start, n = ev.unit.nonce_start, ev.result.count
                counts[ev.unit.extranonce][start:start + n] += 1
                per_backend[ev.backend] = per_backend.get(ev.backend, 0) + n

    backends = [CpuBackend(threads=1, name="cpu-a"), CpuBackend(threads=1, name="cpu-b"), ReferenceBackend()]
    for b in backends:
        b.warm_up()
    coord = Coordinator(backends, unit_seconds=0.01, on_event=on_event, nonce_space=space, max_unit=1024)
    with coord:
        coord.set_job(make_job(target=1, job_id="prime", prev=b"\x03" * 32))
        deadline = time.time() + 120
        while len(primed) < len(backends) and time.time() < deadline:
            time.sleep(0.01)
        assert primed == {"cpu-a", "cpu-b", "ref"}
        coord.set_job(make_job(target=1), first_extranonce=first)  # target 1: no solution ends it early
        deadline = time.time() + 120
        while sum(int(c.sum()) for c in counts.values()) < 3 * space and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    for x, c in counts.items():
        assert (c == 1).all(), f"extranonce {x}: nonces hashed {c.min()}..{c.max()} times"
    assert set(per_backend) == {"cpu-a", "cpu-b", "ref"}, per_backend  # every backend took part
    # Each extranonce has its own merkle root, so its own header prefix.
    job = make_job(1)
    assert len({job.work(x).header_prefix for x in (253, 254, 255)}) == 3


def test_allocator_units_are_disjoint_and_roll():
    alloc = NonceAllocator(make_job(1), 1, first_extranonce=0, nonce_space=100)
    units = [alloc.take(30) for _ in range(8)]
    spans = [(u.extranonce, u.nonce_start, u.count) for u in units]
    assert spans[:4] == [(0, 0, 30), (0, 30, 30), (0, 60, 30), (0, 90, 10)]
    assert spans[4] == (1, 0, 30)


def test_a_budget_bounds_the_nonces_searched_and_tries_count_as_cores_maxtries():
    """generatetoaddress's `maxtries`: with a budget no nonce past it is handed out, the search
    ends (`searched_out`) when the budget is spent, and `tries` counts every failed nonce; with
    a hit, only the nonces before the first hit are tries (Core stops there, free of charge for
    the winner), whatever else the unit hashed."""
    with Coordinator([ReferenceBackend()], unit_seconds=0.05, max_unit=1000) as coord:
        coord.set_job(make_job(target=1), budget=2_500)  # target 1: no hits
        deadline = time.time() + 30
        while not coord.searched_out() and time.time() < deadline:
            time.sleep(0.005)
        assert coord.searched_out() and coord.wait_solution(timeout=0) is None
        assert coord.tries() == coord.stats["ref"].hashes == 2_500
    job = make_job(target=1 << 254)  # a quarter of all nonces are hits
    first = reference_hits(job.work(0), 0, 1000)[0]
    assert first > 0  # so the count below says something
    with Coordinator([ReferenceBackend()], unit_seconds=0.05, max_unit=1000) as coord:
        coord.set_job(job, budget=10_000)
        solution = coord.wait_solution(timeout=30)
    assert solution is not None and solution.nonce == first
    assert coord.tries() == first < coord.stats["ref"].hashes == 1000


def test_solution_is_verified_and_first_wins():
    coord = Coordinator([ReferenceBackend()], unit_seconds=0.05)
    job = make_job(target=1 << 250)
    with coord:
        coord.set_job(job)
        sol = coord.wait_solution(timeout=60)
    assert sol is not None and sol.job is job
    assert sol.header.meets_target(job.target)
    assert coord.solutions.empty()


def test_new_job_drops_stale_hits():
    """Hits of units from an older job are never submitted."""
    events = []
    coord = Coordinator([ReferenceBackend()], unit_seconds=0.05, on_event=events.append)
    easy_old = make_job(target=(1 << 256) - 1, job_id="old")
    hard_new = make_job(target=1, job_id="new", prev=b"\x02" * 32)
    with coord:
        coord.set_job(easy_old)
        while not coord.stats["ref"].last_job_start:  # a unit of the old job is now in flight
            time.sleep(0.0005)
        coord.set_job(hard_new)
        time.sleep(0.5)
        solutions = []
        while not coord.solutions.empty():
            solutions.append(coord.solutions.get())
        latency = coord.job_latency()
    assert not solutions  # the old job's hits were dropped, the new one has none
    stale = [e for e in events if e.kind == "stale"]
    assert stale and all(e.unit.job is easy_old for e in stale)
    assert coord.stats["ref"].stale > 0
    assert latency is not None and latency < 1.0


def test_cancelled_search_stops_early_and_reports_what_it_searched():
    """A set cancel event stops a long search at the next piece; the result covers exactly the
    prefix it reports, hit for hit."""
    backend = ReferenceBackend(max_hits=1 << 20)
    backend.measured_rate = 1e6  # pieces of max(2^16, 50 ms of work) = 2^16 nonces
    work = make_job(target=1 << 252).work(0)  # about one hit in 16
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    result = backend.search(work, 1000, 1 << 24, cancel)  # some 16 s of hashlib if not cancelled
    # Stopped early is the count, not a time (a loaded machine hashes slower, not differently).
    assert 0 < result.count < 1 << 24 and result.count % (1 << 16) == 0
    expected = reference_hits(work, 1000, result.count)
    assert result.nonces == expected and result.total == len(expected) and result.rejected == 0
    assert backend.search(work, 0, 1 << 16, cancel).count == 0  # already cancelled: nothing searched


def test_new_job_interrupts_long_units_on_every_backend(host_builds):
    """Units of several seconds each: a new job still reaches both backends within a fraction of
    a unit, because the old job's units stop at their next cancellation check."""
    backends = [CpuBackend(threads=1, name="cpu"), ReferenceBackend()]
    for b in backends:
        b.warm_up()
    events = []
    coord = Coordinator(backends, unit_seconds=5.0, on_event=events.append)
    with coord:
        coord.set_job(make_job(target=1, job_id="a"))
        time.sleep(1.5)  # first units measure the rates; the next ones are sized to ~5 s
        coord.set_job(make_job(target=1, job_id="b", prev=b"\x02" * 32))
        deadline = time.time() + 30
        while coord.job_latency() is None and time.time() < deadline:
            time.sleep(0.001)
        latency = coord.job_latency()
        coord.set_job(None)
    assert latency is not None and latency < 1.0, latency
    cut = [e for e in events if e.kind == "unit" and e.unit.job.job_id == "a" and e.result.count < e.unit.count]
    assert {e.backend for e in cut} == {"cpu", "ref"}


def test_stop_on_hit_ends_the_search_after_the_piece_with_the_first_hit():
    backend = ReferenceBackend()
    backend.measured_rate = 1e6  # pieces of 2^16 nonces
    work = make_job(target=1 << 240).work(0)  # about one hit in 65,536
    every = reference_hits(work, 0, 1 << 19)
    assert every, "the chosen target has hits in the first 2^19 nonces"
    first_piece_end = (every[0] // (1 << 16) + 1) * (1 << 16)
    result = backend.search(work, 0, 1 << 19, stop_on_hit=True)
    assert result.count == first_piece_end
    assert result.nonces == [n for n in every if n < first_piece_end]
    assert backend.search(work, 0, 1 << 19).count == 1 << 19  # without it the whole range runs


def test_a_pool_job_goes_on_after_each_share_and_no_share_is_skipped(host_builds):
    """A job whose target is a pool's share target is not ended by a hit: every nonce of its space
    that meets the target comes out exactly once, from whichever backend searched it, and a
    retarget (a new share difficulty) takes effect without starting the job over."""
    space = 1 << 15
    backends = [CpuBackend(threads=1, name="cpu"), ReferenceBackend()]
    for b in backends:
        b.warm_up()
    easy = 1 << 249  # about one hit in 128 nonces: some 256 shares in the space
    job = replace(make_job(target=easy, prev=b"\x04" * 32), shares=True, bits=0x1D00FFFF)
    searched = []
    coord = Coordinator(backends, unit_seconds=0.01, nonce_space=space, max_unit=2048,
                        on_event=lambda ev: ev.kind == "unit" and searched.append(ev.result.count))
    with coord:
        coord.set_job(job, first_extranonce=job.max_extranonce)  # one extranonce: the job then ends
        deadline = time.time() + 60
        while sum(searched) < space and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
    found = []
    while not coord.solutions.empty():
        found.append(coord.solutions.get().nonce)
    expected = reference_hits(job.work(job.max_extranonce), 0, space)
    assert len(expected) > 100
    assert sorted(found) == expected  # none skipped after a share, none twice
    assert sum(searched) == space

    # A harder target mid-job: the search goes on where it was, with the new target.
    coord = Coordinator([ReferenceBackend()], unit_seconds=0.01, nonce_space=space, max_unit=1024)
    with coord:
        coord.set_job(job, first_extranonce=job.max_extranonce)
        first = coord.wait_solution(timeout=30)
        harder = replace(job, target=easy >> 4)
        assert coord.retarget(harder)
        assert not coord.retarget(replace(harder, job_id="other"))  # only the job at work
        deadline = time.time() + 60
        while not coord._alloc.exhausted and time.time() < deadline:
            time.sleep(0.02)
        later = []
        while not coord.solutions.empty():
            later.append(coord.solutions.get())
    assert first is not None and first.job.target == easy
    hard_ones = [s.nonce for s in later if s.job.target == easy >> 4]
    assert hard_ones and all(s.header.meets_target(s.job.target) for s in later)
    assert len({s.nonce for s in later} | {first.nonce}) == len(later) + 1  # nothing hashed twice


def test_a_backend_joins_a_running_coordinator_and_a_stand_in_retires():
    """What a first run does while its kernels compile: the stand-in mines, a backend joins
    mid-job and takes units at once, the stand-in retires and takes no more; a failure from
    outside the workers surfaces from wait_solution."""
    from miner.errors import MinerError
    taken: list[tuple[str, float]] = []
    coord = Coordinator([ReferenceBackend(name="stand-in")], unit_seconds=0.02,
                        on_event=lambda ev: ev.kind == "unit" and taken.append((ev.backend, time.monotonic())))
    with coord:
        coord.set_job(make_job(target=1, extranonce_size=4))
        deadline = time.time() + 30
        while not taken and time.time() < deadline:
            time.sleep(0.01)
        joined = ReferenceBackend(name="joined")
        coord.add_backend(joined)
        while not any(name == "joined" for name, _ in taken) and time.time() < deadline:
            time.sleep(0.01)
        coord.retire("stand-in")
        retired_at = time.monotonic()
        time.sleep(0.5)
        with pytest.raises(ValueError, match="unique"):
            coord.add_backend(ReferenceBackend(name="joined"))
        coord.fail(MinerError("backend cpu could not start"))
        with pytest.raises(MinerError, match="could not start"):
            coord.wait_solution(timeout=0.1)
    assert any(name == "joined" for name, _ in taken)
    late = [t for name, t in taken if name == "stand-in" and t > retired_at + 0.1]
    assert not late  # at most the unit in flight when it retired
    assert [b.name for b in coord.backends] == ["stand-in", "joined"]
    assert coord.stats["stand-in"].hashes > 0 and coord.stats["joined"].hashes > 0
