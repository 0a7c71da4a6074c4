"""The `miner bench` engine: hash rate per backend as median/min/max of timed runs after a warm-up.

Every run searches a fresh range of a hard-target job (so the exact path never runs and the
figure is the kernel's), for about `duration` seconds, and the rate is nonces / wall time.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from dataclasses import asdict, dataclass, field

from miner.kernels.cpu_select import OTHERS_BUSY, OtherWork

from miner.backends.base import Backend
from miner.backends.work import NONCE_SPACE, KernelWork
from miner.mining.coordinator import Coordinator
from miner.mining.work import Job
from miner.primitives.coinbase import coinbase_template


@dataclass
class BenchResult:
    backend: str
    device: str
    setting: str  # e.g. "threads=2" or "block=256 npt=64"
    runs: list[float] = field(default_factory=list)  # hashes/s of each timed run
    compile_seconds: float | None = None  # compile or load from cache, before the first call
    first_call_seconds: float | None = None  # one 1-nonce search after warm-up: launch overhead
    predicted: float | None = None  # hashes/s from the static SASS count (CUDA), if available
    # Share of all cores other programs took during the timed runs (None where unknown): from a
    # quarter up the rate is low for reasons not the backend's, and the report says so.
    others_busy: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(median=self.median, min=min(self.runs), max=max(self.runs))
        return d


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import llvmlite.binding as llvm
        cpu += f" ({llvm.get_host_cpu_name()})"
    except (ImportError, RuntimeError, OSError):  # the LLVM name is a detail the row can do without
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def bench_backend(backend: Backend, duration: float, runs: int, setting: str = "",
                  pow: str = "sha256d") -> BenchResult:
    """Warm up (timing the compile), time a first 1-nonce call (launch overhead), then `runs`
    timed runs of about `duration` s each, of the proof of work `pow`."""
    work = KernelWork(bytes(range(76)), 1, pow=pow)  # target 1: no hit, ever; the fast path only
    result = BenchResult(backend.name, backend.device, setting)
    t0 = time.perf_counter()
    backend.warm_up()
    warm = time.perf_counter() - t0
    result.device = backend.device  # warm-up may settle it (the CPU backend names its kernel then)
    # Backends that compile say how long it took; for the rest warm-up is the whole cost.
    result.compile_seconds = getattr(backend, "compile_seconds", None)
    if result.compile_seconds is None and warm > 0.01:
        result.compile_seconds = warm
    t1 = time.perf_counter()
    backend.search(work, 0, 1)
    result.first_call_seconds = time.perf_counter() - t1
    # Size a run from a short probe so each run lasts about `duration`.
    count = backend.initial_batch
    while True:
        t = time.perf_counter()
        backend.search(work, 0, count)
        dt = time.perf_counter() - t
        if dt > 0.2 or count >= NONCE_SPACE // 4:
            break
        count *= 4
    count = int(min(max(count * duration / dt, 1), NONCE_SPACE - 1))
    start = 0
    meter = OtherWork()  # the kernel chooser's measure: /proc/stat's busy time less our own
    for _ in range(runs):
        if start + count > NONCE_SPACE:
            start = 0
        t = time.perf_counter()
        backend.search(work, start, count)
        result.runs.append(count / (time.perf_counter() - t))
        start += count
    result.others_busy = meter.share()
    return result


def busy_notes(timed: list[tuple[str, float | None]]) -> list[str]:
    """Lines naming each (what was timed, others' share) where other programs took a quarter of
    the CPU or more during the timing (`cpu_select.OTHERS_BUSY`, the share at which the kernel
    chooser calls its own timing provisional), under one heading; none when no timing was
    disturbed. On a loaded machine two threads can time no faster than one, and the table alone
    does not say why."""
    busy = [f"  {what}: {share:.0%} of the CPU" for what, share in timed
            if share is not None and share >= OTHERS_BUSY]
    return ["other programs were busy during these timings (their rates are understated):", *busy] if busy else []


@dataclass
class JobSwitchResult:
    """Seconds from `Coordinator.set_job` until every backend was working on the new job."""

    backends: list[str]
    unit_seconds: float
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(median=self.median, max=max(self.samples))
        return d


def _hard_job(job_id: str) -> Job:
    """A job no nonce solves (target 1), so every backend stays busy until the next switch."""
    return Job(job_id=job_id, height=1, version=0x20000000, prev_hash=job_id.encode().ljust(32, b"\0"),
               coinbase=coinbase_template(1, b"bench"), branch=(), time=1_700_000_000,
               bits=0x207FFFFF, target=1)


def measure_job_switch(backends: list[Backend], switches: int, unit_seconds: float = 0.25,
                       settle: float = 1.0, seed: int = 1) -> JobSwitchResult:
    """Run `backends` together under a coordinator and switch jobs `switches` times at random
    points within units; each sample is the time until the last backend started the new job.

    A backend busy with a unit of the old job stops at its next cancellation check (a piece of
    about `CANCEL_CHECK_SECONDS` of work), so the latency is bounded by a piece plus the launch
    overhead, not by the unit length.
    """
    rng = random.Random(seed)
    result = JobSwitchResult([b.name for b in backends], unit_seconds)
    with Coordinator(backends, unit_seconds=unit_seconds) as coordinator:
        coordinator.set_job(_hard_job("bench-0"))
        time.sleep(settle)  # let unit sizes follow the measured rates
        for i in range(1, switches + 1):
            time.sleep(rng.uniform(0.3, 1.0) * unit_seconds)
            coordinator.set_job(_hard_job(f"bench-{i}"))
            deadline = time.perf_counter() + 60
            while coordinator.job_latency() is None:
                if time.perf_counter() > deadline:
                    raise RuntimeError("a backend did not pick up the new job within 60 s")
                time.sleep(0.0005)
            result.samples.append(coordinator.job_latency())
        coordinator.set_job(None)
    return result


_STATIC_REPORTS: dict = {}


def static_prediction(backend: Backend) -> float | None:
    """Predicted hashes/s for a CUDA backend's own device from the static SASS count of the kernel
    for its architecture, or None when that cannot be had (no nvcc or cuobjdump, unknown clock)."""
    arch, sms, ghz = (getattr(backend, a, None) for a in ("arch", "sms", "clock_ghz"))
    if backend.kind != "cuda" or not (arch and sms and ghz):
        return None
    if arch not in _STATIC_REPORTS:
        from miner.bench.sass import analyse
        try:
            _STATIC_REPORTS[arch] = analyse(arch)
        except (FileNotFoundError, RuntimeError, ValueError, OSError):
            _STATIC_REPORTS[arch] = None
    report = _STATIC_REPORTS[arch]
    return None if report is None else report.predict(sms, ghz)["predicted_ghs"] * 1e9
