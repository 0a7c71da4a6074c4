"""The CUDA backend: kernels/sha256d.cu compiled once by NVRTC through CuPy, one backend per GPU.

Launch geometry (threads per block, blocks, nonces per thread) is autotuned on first use per
device and driver and cached in a small JSON file, so later runs start at the tuned shape.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from miner.kernels.cuda_job import JOB_WORDS, KERNEL_NAME, NVRTC_OPTIONS, job_words, source_text

from ..errors import MinerError, UsageError
from ..work import KernelWork
from .base import Backend

try:
    import cupy  # type: ignore[import-not-found]
except ImportError as exc:  # the CUDA extra is optional
    cupy = None
    _IMPORT_ERROR = f"CuPy is not installed ({exc.name}); pip install -e '.[cuda12]' or '.[cuda13]'"
else:
    _IMPORT_ERROR = ""

TUNING_FILE = Path(os.environ.get("MINER_CACHE", Path.home() / ".cache" / "pow-miner")) / "cuda-launch.json"
BLOCK_CHOICES = (128, 256, 512)
NONCES_PER_THREAD_CHOICES = (16, 64, 256)
CUDA_DEV_ATTR_CLOCK_RATE = 13  # cudaDevAttrClockRate, in kHz


def device_count() -> tuple[int, str]:
    """(CUDA devices CuPy sees, the reason when there are none)."""
    if cupy is None:
        return 0, _IMPORT_ERROR
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device, broken install
        return 0, f"CuPy sees no CUDA device ({type(exc).__name__}: {exc})"
    return (n, "") if n > 0 else (0, "CuPy sees no CUDA device")


def check_launch_shape(block: int, nonces_per_thread: int) -> None:
    """A launch shape the kernel can run: whole warps, at most 1024 threads a block, and a
    per-thread nonce count the 32-bit trip counter handles."""
    if not (32 <= block <= 1024 and block % 32 == 0) or not 1 <= nonces_per_thread <= 1 << 16:
        raise UsageError(f"bad launch shape {block}x{nonces_per_thread}: block must be a "
                         f"multiple of 32 up to 1024, nonces per thread 1..65536")


def _clock_ghz(props: dict, index: int) -> float | None:
    """Boost clock in GHz: from the properties where present (CUDA 13 dropped `clockRate` from
    them), else from the device attribute; None if neither answers."""
    khz = props.get("clockRate")
    if not khz:
        try:
            khz = cupy.cuda.runtime.deviceGetAttribute(CUDA_DEV_ATTR_CLOCK_RATE, index)
        except Exception:
            return None
    return khz / 1e6 if khz else None


class CudaBackend(Backend):
    kind = "cuda"

    def __init__(self, index: int = 0, max_hits: int = 64):
        count, why = device_count()
        if count == 0:
            raise UsageError(f"backend 'cuda' is not available here: {why}")
        if not 0 <= index < count:
            raise UsageError(f"no CUDA device {index}: this machine has {count}")
        self.index = index
        with cupy.cuda.Device(index):
            props = cupy.cuda.runtime.getDeviceProperties(index)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            self.sms = int(props["multiProcessorCount"])
            self.arch = f"sm_{props['major']}{props['minor']}"
            self.driver = cupy.cuda.runtime.driverGetVersion()
            self.clock_ghz = _clock_ghz(props, index)
            self._hits = cupy.zeros(1 + max_hits, dtype=cupy.uint32)
        super().__init__(f"cuda:{index}", name, max_hits)
        self._module = None
        self._kernel = None
        self._job_symbol = None
        self.compile_seconds: float | None = None
        cached = self._load_tuning()
        self.block, self.nonces_per_thread = cached or (256, 64)
        # Where the launch shape came from: "cache" (an earlier autotune on this device and
        # driver), "manual" (set_launch, as bench does) or "default" (warm_up will autotune).
        self.shape_source = "cache" if cached else "default"

    @property
    def initial_batch(self) -> int:
        return self.sms * 2048 * 64

    # ------------------------------------------------------------------ compile and tune

    def warm_up(self) -> None:
        if self._kernel is not None:
            return
        t0 = time.perf_counter()
        with cupy.cuda.Device(self.index):
            self._module = cupy.RawModule(code=source_text(), options=NVRTC_OPTIONS,
                                          name_expressions=None)
            self._kernel = self._module.get_function(KERNEL_NAME)
            self._job_symbol = self._module.get_global("c_job")
            cupy.cuda.Device(self.index).synchronize()
        self.compile_seconds = time.perf_counter() - t0
        if self.shape_source == "default":
            self.autotune()  # first use on this device and driver: about 2 s, then cached

    def _tuning_key(self) -> str:
        return f"{self.device}|{self.arch}|driver {self.driver}"

    def _load_tuning(self) -> tuple[int, int] | None:
        try:
            entry = json.loads(TUNING_FILE.read_text()).get(self._tuning_key())
            return (int(entry["block"]), int(entry["nonces_per_thread"])) if entry else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def autotune(self, seconds_per_shape: float = 0.2) -> dict:
        """Time every launch shape on a hard target; keep and cache the fastest."""
        self.warm_up()
        work = KernelWork(bytes(76), 1)
        results = {}
        for block in BLOCK_CHOICES:
            for npt in NONCES_PER_THREAD_CHOICES:
                self.block, self.nonces_per_thread = block, npt
                count = min(self.sms * 8 * block * npt, 2**32 - 1)
                self._search(work, 0, count)
                t0, n = time.perf_counter(), 0
                while time.perf_counter() - t0 < seconds_per_shape:
                    self._search(work, 0, count)
                    n += count
                results[(block, npt)] = n / (time.perf_counter() - t0)
        (self.block, self.nonces_per_thread), best = max(results.items(), key=lambda kv: kv[1])
        self.shape_source = "cache"
        try:
            TUNING_FILE.parent.mkdir(parents=True, exist_ok=True)
            data = json.loads(TUNING_FILE.read_text()) if TUNING_FILE.exists() else {}
            data[self._tuning_key()] = {"block": self.block, "nonces_per_thread": self.nonces_per_thread,
                                        "rate": best}
            TUNING_FILE.write_text(json.dumps(data, indent=2))
        except (OSError, ValueError):
            pass  # tuning is an optimisation; a read-only home must not stop mining
        return {f"{b}x{n}": r for (b, n), r in results.items()}

    def set_launch(self, block: int, nonces_per_thread: int) -> None:
        """Use this launch shape from now on (bench scaling; autotune picks one for mining)."""
        check_launch_shape(block, nonces_per_thread)
        self.block, self.nonces_per_thread = block, nonces_per_thread
        self.shape_source = "manual"

    # ------------------------------------------------------------------ search

    def _search(self, work: KernelWork, nonce_start: int, count: int) -> tuple[list[int], int]:
        self.warm_up()
        job = job_words(work)
        if job.shape != (JOB_WORDS,):
            raise MinerError("internal error: job has the wrong size")
        with cupy.cuda.Device(self.index):
            self._job_symbol.copy_from_host(job.ctypes.data, job.nbytes)
            self._hits.fill(0)
            threads_needed = -(-count // self.nonces_per_thread)
            grid = max(1, min(-(-threads_needed // self.block), 2**31 - 1))
            self._kernel((grid,), (self.block,),
                         (np.uint32(nonce_start), np.uint32(count),
                          np.uint32(-(-count // (grid * self.block))), self._hits,
                          np.uint32(self.max_hits)))
            hits = self._hits.get()
        total = int(hits[0])
        return [int(x) for x in hits[1:1 + min(total, self.max_hits)]], total
