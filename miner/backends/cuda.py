"""The CUDA backend: kernels/sha256d.cu compiled once by NVRTC through CuPy, one backend per GPU.

Launch geometry (threads per block, blocks, nonces per thread) is autotuned on first use per
device and driver and cached in a small JSON file, so later runs start at the tuned shape.
"""

from __future__ import annotations

import time

import numpy as np

from miner.backends.base import Backend
from miner.backends.work import KernelWork
from miner.errors import InvalidInput, MinerError
from miner.kernels.cuda_job import (
    JOB_WORDS,
    KERNEL_NAME,
    NVRTC_OPTIONS,
    job_words,
    source_text,
)
from miner.kernels.tuning_cache import cache_dir, read_entries, write_entries

try:
    import cupy  # type: ignore[import-not-found]
except ImportError as exc:  # the CUDA extra is optional
    cupy = None
    # One clause, no parentheses: it is quoted inside other lines ("no GPU here: ...").
    _IMPORT_ERROR = ("CuPy is not installed" + ("" if exc.name == "cupy" else f", {exc.name} is missing")
                     + "; pip install -e '.[cuda12]' or '.[cuda13]'")
else:
    _IMPORT_ERROR = ""

TUNING_FILE = cache_dir() / "cuda-launch.json"
BLOCK_CHOICES = (128, 256, 512)
NONCES_PER_THREAD_CHOICES = (16, 64, 256)
CUDA_DEV_ATTR_CLOCK_RATE = 13  # cudaDevAttrClockRate, in kHz
# Nonces per kernel launch. The kernel takes its count and computes its thread count
# (gridDim.x * blockDim.x) in 32 bits: a count of 2^32 does not fit the argument, and a grid of
# 2^32 threads makes the thread count 0, a divisor. Launches of at most 2^31 nonces keep both far
# inside 32 bits whatever the launch shape (about a quarter of a second on today's largest GPUs).
MAX_LAUNCH_NONCES = 1 << 31


def device_count() -> tuple[int, str]:
    """(CUDA devices CuPy sees, the reason when there are none)."""
    if cupy is None:
        return 0, _IMPORT_ERROR
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001  (no driver, no device, a broken install: each its own type)
        return 0, _no_device_reason(exc)
    return (n, "") if n > 0 else (0, "no GPU found: the NVIDIA driver reports no CUDA device")


def _no_device_reason(exc: Exception) -> str:
    """What a failed device count means, in words: the runtime's "driver version is
    insufficient" is what it says when there is no driver at all."""
    asked = "CuPy asked the CUDA runtime for devices (cudaGetDeviceCount)"
    if not _driver_present():
        return f"no GPU found: {asked}, and no NVIDIA driver is installed (libcuda.so.1 not found)"
    text = str(exc)
    if "InsufficientDriver" in text:
        return f"the NVIDIA driver is older than CuPy's CUDA runtime needs: {asked} and got {text}"
    if "NoDevice" in text:
        return f"no GPU found: {asked}; the driver is installed but sees no device"
    return f"no usable GPU: {asked} and got {type(exc).__name__}: {text}"


def _driver_present() -> bool:
    import ctypes
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def check_launch_shape(block: int, nonces_per_thread: int) -> None:
    """A launch shape the kernel can run: whole warps, at most 1024 threads a block, and a
    per-thread nonce count the 32-bit trip counter handles."""
    if not (32 <= block <= 1024 and block % 32 == 0) or not 1 <= nonces_per_thread <= 1 << 16:
        raise InvalidInput(f"bad launch shape {block}x{nonces_per_thread}: block must be a "
                         f"multiple of 32 up to 1024, nonces per thread 1..65536")


def _clock_ghz(props: dict, index: int) -> float | None:
    """Boost clock in GHz: from the properties where present (CUDA 13 dropped `clockRate` from
    them), else from the device attribute; None if neither answers."""
    khz = props.get("clockRate")
    if not khz:
        try:
            khz = cupy.cuda.runtime.deviceGetAttribute(CUDA_DEV_ATTR_CLOCK_RATE, index)
        except RuntimeError:  # CUDARuntimeError: the attribute is not reported
            return None
    return khz / 1e6 if khz else None


class CudaBackend(Backend):
    kind = "cuda"

    def __init__(self, index: int = 0, max_hits: int = 64):
        count, why = device_count()
        if count == 0:
            raise InvalidInput(f"backend 'cuda' is not available here: {why}")
        if not 0 <= index < count:
            raise InvalidInput(f"no CUDA device {index}: this machine has {count}")
        self.index = index
        with cupy.cuda.Device(index):
            props = cupy.cuda.runtime.getDeviceProperties(index)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            self.sms = int(props["multiProcessorCount"])
            self.arch = f"sm_{props['major']}{props['minor']}"
            self.driver = cupy.cuda.runtime.driverGetVersion()
            self.clock_ghz = _clock_ghz(props, index)
        super().__init__(f"cuda:{index}", name, max_hits)
        self._hits = None  # sized to max_hits at each search: callers may change max_hits
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

    def warm_up_words(self) -> str:
        words = "compiling its kernel with NVRTC (or loading CuPy's cached build of it)"
        if self.shape_source == "default":
            words += ", then timing launch shapes (first use on this device and driver)"
        return words

    def warm_up(self) -> None:
        self._compile()
        if self.shape_source == "default":
            self.autotune()  # first use on this device and driver: about 2 s, then cached

    def _compile(self) -> None:
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

    def _tuning_key(self) -> str:
        return f"{self.device}|{self.arch}|driver {self.driver}"

    def _load_tuning(self) -> tuple[int, int] | None:
        """The cached shape for this device and driver, if the cache holds a usable one. The file
        is the user's to edit or damage: anything but a valid shape is ignored, never trusted."""
        entry = _read_tuning_file().get(self._tuning_key())
        if not isinstance(entry, dict):
            return None
        block, npt = entry.get("block"), entry.get("nonces_per_thread")
        if type(block) is not int or type(npt) is not int:
            return None
        try:
            check_launch_shape(block, npt)
        except InvalidInput:
            return None
        return block, npt

    def autotune(self, seconds_per_shape: float = 0.2) -> dict:
        """Time every launch shape on a hard target; keep and cache the fastest."""
        self._compile()
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
        data = _read_tuning_file()
        data[self._tuning_key()] = {"block": self.block, "nonces_per_thread": self.nonces_per_thread,
                                    "rate": best}
        write_entries(TUNING_FILE, data)
        return {f"{b}x{n}": r for (b, n), r in results.items()}

    def set_launch(self, block: int, nonces_per_thread: int) -> None:
        """Use this launch shape from now on (bench scaling; autotune picks one for mining)."""
        check_launch_shape(block, nonces_per_thread)
        self.block, self.nonces_per_thread = block, nonces_per_thread
        self.shape_source = "manual"

    # ------------------------------------------------------------------ search

    def _hit_buffer(self):
        """hits[0] counts, hits[1..] keep up to max_hits nonces. Sized from max_hits at each
        search, and the kernel is told the buffer's own capacity, so a caller that raises
        max_hits after construction (as `miner compare` does) can never make it write past."""
        if self._hits is None or len(self._hits) != 1 + self.max_hits:
            self._hits = cupy.zeros(1 + self.max_hits, dtype=cupy.uint32)
        return self._hits

    def launch_plan(self, nonce_start: int, count: int) -> list[tuple[int, int, int, int]]:
        """(nonce_start, count, grid, nonces per thread) of each launch covering the range."""
        plan = []
        done = 0
        while done < count:
            n = min(count - done, MAX_LAUNCH_NONCES)
            threads_needed = -(-n // self.nonces_per_thread)
            grid = -(-threads_needed // self.block)
            # grid * block < 2^31 + 1024: the kernel's 32-bit thread count never wraps, and
            # threads * per_thread >= n, so every nonce of the launch is covered.
            plan.append((nonce_start + done, n, grid, -(-n // (grid * self.block))))
            done += n
        return plan

    def _search(self, work: KernelWork, nonce_start: int, count: int) -> tuple[list[int], int]:
        self._compile()
        job = job_words(work)
        if job.shape != (JOB_WORDS,):
            raise MinerError("internal error: job has the wrong size")
        found: list[int] = []
        total = 0
        with cupy.cuda.Device(self.index):
            hits = self._hit_buffer()
            capacity = len(hits) - 1
            self._job_symbol.copy_from_host(job.ctypes.data, job.nbytes)
            for start, n, grid, per_thread in self.launch_plan(nonce_start, count):
                hits.fill(0)
                self._kernel((grid,), (self.block,),
                             (np.uint32(start), np.uint32(n), np.uint32(per_thread), hits,
                              np.uint32(capacity)))
                out = hits.get()
                total += int(out[0])
                found += [int(x) for x in out[1:1 + min(int(out[0]), capacity)]]
        return found[:self.max_hits], total


def _read_tuning_file() -> dict:
    """The tuning cache as a dict of entries (see `miner.kernels.tuning_cache`)."""
    return read_entries(TUNING_FILE)
