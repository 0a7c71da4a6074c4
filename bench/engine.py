"""The `miner bench` engine: hash rate per backend as median/min/max of timed runs after a warm-up.

Every run searches a fresh range of a hard-target job (so the exact path never runs and the
figure is the kernel's), for about `duration` seconds, and the rate is nonces / wall time.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field

from miner.backends.base import Backend
from miner.work import NONCE_SPACE, KernelWork


@dataclass
class BenchResult:
    backend: str
    device: str
    setting: str  # e.g. "threads=2" or "block=256 npt=64"
    runs: list[float] = field(default_factory=list)  # hashes/s of each timed run
    compile_seconds: float | None = None
    first_call_seconds: float | None = None

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
    except Exception:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def bench_backend(backend: Backend, duration: float, runs: int, setting: str = "") -> BenchResult:
    """Warm up (timing compile and first call), then `runs` timed runs of about `duration` s."""
    work = KernelWork(bytes(range(76)), 1)  # target 1: no hit, ever; the fast path only
    result = BenchResult(backend.name, backend.device, setting)
    t0 = time.perf_counter()
    backend.warm_up()
    result.compile_seconds = getattr(backend, "compile_seconds", None)
    t1 = time.perf_counter()
    backend.search(work, 0, 1)
    result.first_call_seconds = time.perf_counter() - t1 + (t1 - t0 if result.compile_seconds is None else 0)
    # Size a run from a short probe so each run lasts about `duration`.
    count = backend.initial_batch
    while True:
        t = time.perf_counter()
        backend.search(work, 0, count)
        dt = time.perf_counter() - t
        if dt > 0.2 or count >= NONCE_SPACE // 4:
            break
        count *= 4
    count = int(min(max(count * duration / dt, 1), NONCE_SPACE // 2))
    start = 0
    for _ in range(runs):
        if start + count > NONCE_SPACE:
            start = 0
        t = time.perf_counter()
        backend.search(work, start, count)
        result.runs.append(count / (time.perf_counter() - t))
        start += count
    return result
