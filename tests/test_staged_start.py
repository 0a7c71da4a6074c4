"""A first run that must time its CPU kernels stops its own stand-in for the timing.

`--cpu-kernel auto` times the SIMD and SHA kernels once per CPU. On 2 cores the hashlib
stand-in that mines during the compile took a core of the two, so the timing was always taken
on a machine the run itself kept busy. `StagedStart` hands the CPU backend a hook that stops the
stand-in (its unit in flight finished) before the timing, and the stand-in stays off; the timed
backend joins right after. Here a backend that "times" by watching the stand-in's hash count
shows the stand-in idle throughout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from miner.kernels import cpu_select
from miner.kernels.tuning_cache import write_entries
from support.jobs import make_job

from miner.backends.cpu import CpuBackend
from miner.backends.ref import ReferenceBackend
from miner.mining import startup
from miner.mining.coordinator import Coordinator
from miner.mining.startup import StagedStart


class TimedBackend(ReferenceBackend):
    """hashlib behind a warm-up that, like the CPU backend's `auto`, calls `before_measure`
    and then times something: here it records the stand-in's ("ref") hashes across the timing.
    `wait_for_stand_in`: let the stand-in mine first (else the timing begins at once)."""

    kind = "timed"

    def __init__(self, coordinator: Coordinator, wait_for_stand_in: bool):
        super().__init__(name="timed")
        self.before_measure = None
        self.compile_seconds = None
        self.coordinator = coordinator
        self.during_timing: tuple[int, int] | None = None
        self.wait_for_stand_in = wait_for_stand_in

    def warm_up(self) -> None:
        if self.compile_seconds is not None:
            return
        deadline = time.monotonic() + 30
        while self.wait_for_stand_in and self._hashes() == 0:
            assert time.monotonic() < deadline, "the stand-in never mined"
            time.sleep(0.01)
        assert self.before_measure is not None, "StagedStart gave the backend no hook"
        self.before_measure()
        before = self._hashes()
        time.sleep(0.4 if self.wait_for_stand_in else 1.0)  # the timing (past the grace, in the second case)
        self.during_timing = (before, self._hashes())
        self.compile_seconds = 0.0

    def _hashes(self) -> int:
        stats = self.coordinator.stats.get("ref")
        return stats.hashes if stats is not None else 0


def _staged_run(monkeypatch, grace: float, wait_for_stand_in: bool):
    """A coordinator with no backend of its own, a StagedStart of one TimedBackend (so a hashlib
    stand-in named "ref"), the grace before the stand-in set to `grace`; (coordinator, staged,
    backend, events), the coordinator not started."""
    monkeypatch.setattr(startup, "GRACE", grace)
    monkeypatch.setattr(startup, "NOTICE_AFTER", 0.01)
    events: list[dict] = []
    coord = Coordinator([], unit_seconds=0.02)
    backend = TimedBackend(coord, wait_for_stand_in)
    staged = StagedStart([backend], events.append)
    assert staged.stand_in is not None and staged.stand_in.name == "ref"
    return coord, staged, backend, events


def test_the_stand_in_stops_for_a_kernel_timing_and_stays_off(monkeypatch):
    coord, staged, backend, events = _staged_run(monkeypatch, grace=0.05, wait_for_stand_in=True)
    with coord:
        coord.set_job(make_job(target=1, extranonce_size=4))
        staged.start(coord)
        deadline = time.monotonic() + 30
        while not any(e.get("status") == "joined" for e in events):
            assert time.monotonic() < deadline, events
            time.sleep(0.01)
        while coord.stats["timed"].hashes == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stand_in_after_join = coord.stats["ref"].hashes
        time.sleep(0.2)
        assert coord.stats["ref"].hashes == stand_in_after_join  # it did not come back
        staged.stop()
    before, after = backend.during_timing
    assert before > 0 and after == before  # not one hash of the stand-in's during the timing
    kinds = [(e["status"], e["backend"]) for e in events if e["event"] == "backend"]
    assert ("retired", "ref") in kinds and ("joined", "timed") in kinds
    assert kinds.index(("retired", "ref")) < kinds.index(("joined", "timed")), kinds
    assert kinds.count(("retired", "ref")) == 1, kinds
    assert not [t for t in threading.enumerate() if t.name == "miner-ref" and t.is_alive()]


def test_a_timing_due_before_the_grace_keeps_the_stand_in_from_starting(monkeypatch):
    """A cached kernel whose choice is still to be timed: the timing begins before the grace
    ends, so the stand-in must not start in the middle of it."""
    coord, staged, backend, events = _staged_run(monkeypatch, grace=0.3, wait_for_stand_in=False)
    with coord:
        coord.set_job(make_job(target=1, extranonce_size=4))
        staged.start(coord)
        deadline = time.monotonic() + 30
        while coord.stats.get("timed") is None or coord.stats["timed"].hashes == 0:
            assert time.monotonic() < deadline, events
            time.sleep(0.01)
        staged.stop()
    assert backend.during_timing == (0, 0)
    assert "ref" not in coord.stats or coord.stats["ref"].hashes == 0
    kinds = [(e["status"], e["backend"]) for e in events if e["event"] == "backend"]
    assert ("joined", "timed") in kinds and ("retired", "ref") not in kinds, kinds


# ----------------------------------------------------------------- what the waiting line says

def test_a_first_run_says_it_compiles_and_only_then(tmp_path):
    """With nothing in numba's cache the notice says the kernel is compiled, a first use on this
    CPU (it said "compiling the kernel (first run only; ...)" on every slow start, later runs
    included). The run is stopped at the notice: its compile in a child process goes with it."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "MINER_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "miner", "mine", "--backend", "cpu", "--cpu-kernel", "simd",
                             "--json", "--chain", str(tmp_path / "c.sqlite")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        notice = None
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("status") == "compiling":
                notice = event
                break
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert notice is not None
    assert notice["message"].startswith("cpu: compiling its kernel (first use on this CPU; later runs load it "
                                        "from the cache); ref mines meanwhile"), notice
    assert notice["doing"].startswith("compiling")


def test_a_provisional_choice_is_said_to_be_timed_again(tmp_path, monkeypatch):
    """A kernel choice stored as provisional (timed on a busy machine) is timed again on the next
    run: the notice says so instead of "compiling"."""
    kernels = cpu_select.available()
    if len(kernels) < 2:
        pytest.skip("this CPU runs one kernel: nothing to choose or time")
    monkeypatch.setenv("MINER_CACHE", str(tmp_path))
    write_entries(tmp_path / cpu_select.CHOICE_FILE_NAME,
                  {cpu_select.choice_key(): {"kernel": kernels[0], "provisional": True, "attempts": 1}})
    backend = CpuBackend(threads=1, kernel="auto")
    try:
        assert backend.warm_up_words().startswith("timing its two kernels again")
        write_entries(tmp_path / cpu_select.CHOICE_FILE_NAME,
                      {cpu_select.choice_key(): {"kernel": kernels[0], "provisional": False}})
        assert not backend.warm_up_words().startswith("timing")  # a settled choice: load or compile it
        assert CpuBackend(threads=1, kernel=kernels[0]).warm_up_words() in (
            "loading its kernel from the cache (slower than the usual second: a busy machine)",
            "compiling its kernel (first use on this CPU; later runs load it from the cache)")
    finally:
        backend.close()
