"""A CuPy-shaped simulator for `miner/backends/cuda.py`, over the host build of the kernel.

No machine the tests run on has a GPU, so the Python around the CUDA kernel (compile, job upload,
launch shape, hit read-back, autotune and its cache) runs here against this stand-in for the
part of CuPy it uses: `RawModule` (`get_function`, `get_global`), `zeros`, `fill`, `get`,
`cuda.Device`, the `cuda.runtime` queries and `copy_from_host`. It follows CuPy's signatures and
argument rules: numpy scalars are passed by their dtype's size and a Python int as a 64-bit
integer, device arrays as pointers, grid and block as tuples (or ints).

A launch runs the same `kernels/sha256d.cu`, built with g++ through `cuda_host_shim.h`, over
every block and thread of the grid. Where a GPU would misbehave the simulator raises instead:
an argument whose size is not what the kernel's signature reads, a pointer from another device,
an out-of-range grid or block, a write past the end of an allocation (guard bytes follow every
one), an integer division by zero (the CPU build traps it; a GPU would not), a copy to a symbol
larger than the symbol. It is a test aid, not a backend: nothing in the product imports it.

    sim = Simulator(devices=2, sms=2)
    monkeypatch.setattr(cuda, "cupy", sim)        # in-process
    cupy_sim.install(sim)                         # or: sys.modules["cupy"], for a subprocess
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from miner.kernels.cuda_job import HOST_LAUNCH, SHIM
from miner.kernels.cuda_scrypt_job import HOST_LAUNCH as SCRYPT_HOST_LAUNCH

GUARD_BYTES = 1 << 20  # after every allocation: any write there is a fault
GUARD_FILL = 0xA5
MAX_THREADS_PER_BLOCK = 1024
MAX_GRID_X = 2**31 - 1
CUDA_DEV_ATTR_CLOCK_RATE = 13
C_TYPE_SIZES = {"uint32_t": 4, "int32_t": 4, "int": 4, "unsigned": 4, "unsigned int": 4,
                "uint64_t": 8, "int64_t": 8, "float": 4, "double": 8}
# Where the host launcher can run a kernel: its name -> the launcher's entry point.
HOST_ENTRY_POINTS = {"sha256d_search": "host_run_blocks", "scrypt_search": "host_run_blocks"}
# Which host launcher builds a source, by the kernel it defines: (launcher, the name it includes
# the kernel under, host_run_blocks' arguments after grid, block, lo, hi).
_U32, _PTR = ctypes.c_uint32, ctypes.c_void_p
_LAUNCHERS = {
    "scrypt_search": (SCRYPT_HOST_LAUNCH, "scrypt.cu", [_U32, _U32, _PTR, _PTR, _U32]),
    "sha256d_search": (HOST_LAUNCH, "sha256d.cu", [_U32, _U32, _U32, _PTR, _U32]),
}


class SimulatedFault(RuntimeError):
    """Something a real GPU would do wrong (corrupt memory, wrong results) or refuse."""


class CUDARuntimeError(RuntimeError):
    """As cupy_backends.cuda.api.runtime.CUDARuntimeError."""


class CUDADriverError(RuntimeError):
    """As cupy_backends.cuda.api.driver.CUDADriverError."""


@dataclass
class Launch:
    """What one kernel launch was given (recorded for tests)."""

    kernel: str
    device: int
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    scalars: dict[str, int]
    blocks_run: int
    sampled: bool


# --------------------------------------------------------------------------- host build

_BUILD_LOCK = threading.Lock()
_LIBRARIES: dict[str, ctypes.CDLL] = {}


def _std_option(options: tuple[str, ...]) -> list[str]:
    """NVRTC options that mean something to g++ (the language standard, macros)."""
    out = []
    for opt in options:
        if opt.startswith("-std=") or opt.startswith("--std="):
            out.append("-std=" + opt.split("=", 1)[1])
        elif opt.startswith("-D"):
            out.append(opt)
    return out


def build_host_library(code: str, options: tuple[str, ...] = ()) -> ctypes.CDLL:
    """`code` (the kernel source a RawModule is given) as a host shared library, built once per
    source and options and cached on disk so that subprocesses share it."""
    gxx = shutil.which("g++") or shutil.which("c++")
    if gxx is None:
        raise RuntimeError("the CuPy simulator needs a C++ compiler (g++)")
    flags = _std_option(options)
    launcher, source_name, run_args = next(v for k, v in _LAUNCHERS.items() if k in code or k == "sha256d_search")
    key = hashlib.sha256("\0".join([code, SHIM.read_text(), launcher.read_text(), *flags]).encode()
                         ).hexdigest()[:20]
    with _BUILD_LOCK:
        if key in _LIBRARIES:
            return _LIBRARIES[key]
        cache = Path(os.environ.get("MINER_CUPY_SIM_CACHE", Path(tempfile.gettempdir()) / "pow-miner-cupy-sim"))
        lib_path = cache / f"{source_name.split('.')[0]}-{key}.so"
        if not lib_path.exists():
            work = Path(tempfile.mkdtemp(prefix="build-", dir=_mkdir(cache)))
            (work / source_name).write_text(code)
            shutil.copy(SHIM, work / SHIM.name)
            shutil.copy(launcher, work / launcher.name)
            out = work / "lib.so"
            proc = subprocess.run([gxx, "-O2", "-shared", "-fPIC", *flags, "-I", str(work),
                                   str(work / launcher.name), "-o", str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise CUDADriverError(f"compile failed (simulated NVRTC): {proc.stderr[-2000:]}")
            os.replace(out, lib_path)  # atomic: a concurrent process sees all or nothing
            shutil.rmtree(work, ignore_errors=True)
        lib = ctypes.CDLL(str(lib_path))
        u32, u32p = ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)
        lib.host_run_blocks.argtypes = [u32] * 4 + run_args + [u32p]
        lib.host_run_blocks.restype = ctypes.c_int
        lib.host_symbol.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
        lib.host_symbol.restype = ctypes.c_void_p
        _LIBRARIES[key] = lib
        return lib


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def kernel_params(code: str, name: str) -> list[tuple[str, str]]:
    """(type, name) of each parameter of `extern "C" __global__ void name(...)` in `code`."""
    m = re.search(r'extern\s+"C"\s+__global__\s+void\s+' + re.escape(name) + r"\s*\(([^)]*)\)", code)
    if m is None:
        raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: {name}")
    params = []
    for raw in m.group(1).split(","):
        words = raw.replace("__restrict__", "").replace("const ", "").split()
        if not words:
            continue
        pname = words[-1].lstrip("*")
        ptype = " ".join(words[:-1]) + ("*" if "*" in raw else "")
        params.append((ptype.replace(" *", "*"), pname))
    return params


# --------------------------------------------------------------------------- memory

class MemoryPointer:
    """Device memory as CuPy's MemoryPointer shows it: an address and copies to and from it."""

    def __init__(self, ptr: int, size: int, what: str):
        self.ptr = ptr
        self.size = size
        self.what = what

    def copy_from_host(self, mem, size: int) -> None:
        src = mem.value if isinstance(mem, ctypes.c_void_p) else mem
        if not isinstance(src, int):
            raise TypeError(f"copy_from_host wants an address (int or ctypes.c_void_p), got {type(mem).__name__}")
        if not 0 <= size <= self.size:
            raise CUDARuntimeError(f"cudaErrorInvalidValue: copy of {size} bytes to {self.what} of {self.size}")
        ctypes.memmove(self.ptr, src, size)

    def copy_to_host(self, mem, size: int) -> None:
        dst = mem.value if isinstance(mem, ctypes.c_void_p) else mem
        if not 0 <= size <= self.size:
            raise CUDARuntimeError(f"cudaErrorInvalidValue: copy of {size} bytes from {self.what} of {self.size}")
        ctypes.memmove(dst, self.ptr, size)


class SimArray:
    """A device array: its bytes followed by GUARD_BYTES of a known pattern."""

    def __init__(self, device: int, shape, dtype):
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape) if isinstance(shape, (tuple, list)) else (int(shape),)
        self.size = int(np.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize
        self.device_id = device
        self._raw = np.full(self.nbytes + GUARD_BYTES, GUARD_FILL, dtype=np.uint8)
        self._view = self._raw[:self.nbytes].view(self.dtype).reshape(self.shape)
        self._view[...] = 0
        self.data = MemoryPointer(self._raw.ctypes.data, self.nbytes, f"an array of {self.nbytes} bytes")

    def __len__(self) -> int:
        return self.shape[0]

    def fill(self, value) -> None:
        self.check_guard("fill")
        self._view[...] = value

    def get(self) -> np.ndarray:
        self.check_guard("get")
        return self._view.copy()

    def check_guard(self, when: str) -> None:
        guard = self._raw[self.nbytes:]
        bad = np.flatnonzero(guard != GUARD_FILL)
        if bad.size:
            raise SimulatedFault(f"out-of-bounds write (seen at {when}): {int(bad[-1]) + 1} bytes past the "
                                 f"end of a {self.nbytes}-byte allocation on device {self.device_id}")


# --------------------------------------------------------------------------- modules and kernels

class RawKernel:
    def __init__(self, sim: Simulator, module: RawModule, name: str):
        self.sim, self.module, self.name = sim, module, name
        self.params = kernel_params(module.code, name)
        entry = HOST_ENTRY_POINTS.get(name)
        if entry is None:
            raise NotImplementedError(f"the simulator has no host launcher for kernel {name!r}")
        self._run = getattr(module.lib, entry)

    def __call__(self, grid, block, args, shared_mem: int = 0, stream=None) -> None:
        grid3, block3 = _dim3(grid, "grid"), _dim3(block, "block")
        if grid3[1:] != (1, 1) or block3[1:] != (1, 1):
            raise NotImplementedError("the host launcher runs one-dimensional grids and blocks")
        if not 1 <= block3[0] <= MAX_THREADS_PER_BLOCK:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {block3[0]} threads per block "
                                  f"(1..{MAX_THREADS_PER_BLOCK})")
        if not 1 <= grid3[0] <= MAX_GRID_X:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: grid of {grid3[0]} blocks (1..{MAX_GRID_X})")
        if not isinstance(args, tuple):
            raise TypeError(f"kernel arguments must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            raise SimulatedFault(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        device = self.sim.current_device()
        values, arrays, scalars = [], [], {}
        for i, ((ptype, pname), arg) in enumerate(zip(self.params, args)):
            where = f"argument {i} ({ptype} {pname}) of {self.name}"
            if ptype.endswith("*"):
                if not isinstance(arg, SimArray):
                    raise SimulatedFault(f"{where}: a pointer parameter was passed a {type(arg).__name__}")
                if arg.device_id != device:
                    raise SimulatedFault(f"{where}: array on device {arg.device_id}, launch on device {device}")
                arrays.append(arg)
                values.append(arg.data.ptr)
                continue
            size = C_TYPE_SIZES[ptype]
            if isinstance(arg, bool) or not isinstance(arg, (int, float, np.generic)):
                raise SimulatedFault(f"{where}: unsupported argument type {type(arg).__name__}")
            if isinstance(arg, (int, float)):  # CuPy passes Python scalars as 64-bit values
                raise SimulatedFault(f"{where}: a Python {type(arg).__name__} is passed as 8 bytes, "
                                     f"the kernel reads {size}")
            if arg.dtype.itemsize != size or arg.dtype.kind not in "iu":
                raise SimulatedFault(f"{where}: a {arg.dtype} ({arg.dtype.itemsize} bytes) where the "
                                     f"kernel reads {size}")
            values.append(int(arg) & ((1 << (8 * size)) - 1))
            scalars[pname] = int(arg)
        with self.module.lock:  # one launch at a time per module: the symbol is shared state
            self.module.upload_pending(device)
            blocks_run, sampled = self._run_blocks(grid3[0], block3[0], values)
        for a in arrays:
            a.check_guard(f"the end of a launch of {self.name}")
        self.sim.launches.append(Launch(self.name, device, grid3, block3, scalars, blocks_run, sampled))

    def _run_blocks(self, grid: int, block: int, values: list[int]) -> tuple[int, bool]:
        """Every block, or with `sample_blocks` set on a big grid the first and last few only."""
        k = self.sim.sample_blocks
        ranges = [(0, grid)] if k is None or grid <= 2 * k else [(0, k), (grid - k, grid)]
        fault = (ctypes.c_uint32 * 2)()
        for lo, hi in ranges:
            if self._run(grid, block, lo, hi, *values, fault):
                raise SimulatedFault(f"integer division by zero in {self.name} (block {fault[0]}, "
                                     f"thread {fault[1]}): a GPU does not trap it and would search the "
                                     f"wrong nonces or none")
        return sum(hi - lo for lo, hi in ranges), len(ranges) > 1


class RawModule:
    def __init__(self, sim: Simulator, code: str | None = None, path: str | None = None,
                 options: tuple = (), backend: str = "nvrtc", translate_cucomplex: bool = False,
                 enable_cooperative_groups: bool = False, name_expressions=None, jitify: bool = False):
        if code is None:
            raise NotImplementedError("the simulator compiles source code only (code=...)")
        if not isinstance(options, tuple):
            raise TypeError("RawModule options must be a tuple of strings")
        self.sim, self.code, self.options = sim, code, options
        self.lib = build_host_library(code, options)
        self.lock = threading.Lock()
        # The constant symbols live once in the host library but once per device on a GPU: each
        # device's copy is kept here and put in place before a launch on that device.
        self._symbols: dict[tuple[str, int], SymbolPointer] = {}

    def get_function(self, name: str) -> RawKernel:
        return RawKernel(self.sim, self, name)

    def get_global(self, name: str) -> SymbolPointer:
        if not re.search(r"__constant__[^;]*\b" + re.escape(name) + r"\s*\[", self.code):
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: {name}")
        size = ctypes.c_size_t()
        addr = self.lib.host_symbol(name.encode(), ctypes.byref(size))
        if not addr:
            raise NotImplementedError(f"the host launcher does not export {name!r}")
        device = self.sim.current_device()
        key = (name, device)
        if key not in self._symbols:
            self._symbols[key] = SymbolPointer(name, addr, size.value, device)
        return self._symbols[key]

    def upload_pending(self, device: int) -> None:
        for (_name, dev), sym in self._symbols.items():
            if dev == device:
                ctypes.memmove(sym.host_addr, sym.shadow.ctypes.data, sym.size)


class SymbolPointer(MemoryPointer):
    """A __constant__ symbol on one device: its own bytes, copied into the host build at launch."""

    def __init__(self, name: str, host_addr: int, size: int, device: int):
        self.shadow = np.zeros(size, dtype=np.uint8)
        super().__init__(self.shadow.ctypes.data, size, f"symbol {name} ({size} bytes)")
        self.host_addr = host_addr
        self.device = device


def _dim3(value, what: str) -> tuple[int, int, int]:
    dims = (value,) if isinstance(value, int) else tuple(value)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) for d in dims):
        raise TypeError(f"{what} must be an int or a tuple of 1 to 3 ints, got {value!r}")
    return tuple(int(d) for d in dims) + (1,) * (3 - len(dims))


# --------------------------------------------------------------------------- devices and runtime

class _Device:
    def __init__(self, sim: Simulator, device: int | None = None):
        self.sim = sim
        self.id = sim.current_device() if device is None else int(device)
        if not 0 <= self.id < len(sim.specs):
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        self._previous: list[int] = []

    @property
    def compute_capability(self) -> str:
        major, minor = self.sim.specs[self.id].cc
        return f"{major}{minor}"

    def __enter__(self) -> _Device:
        self._previous.append(self.sim.current_device())
        self.sim._local.device = self.id
        return self

    def __exit__(self, *exc) -> None:
        self.sim._local.device = self._previous.pop()

    def use(self) -> None:
        self.sim._local.device = self.id

    def synchronize(self) -> None:
        pass  # launches run to completion before they return


class _Runtime:
    CUDARuntimeError = CUDARuntimeError

    def __init__(self, sim: Simulator):
        self.sim = sim

    def getDeviceCount(self) -> int:
        if not self.sim.specs:
            raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return len(self.sim.specs)

    def _spec(self, index: int) -> DeviceSpec:
        if not 0 <= index < len(self.sim.specs):
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        return self.sim.specs[index]

    def getDeviceProperties(self, index: int) -> dict:
        s = self._spec(index)
        # CUDA 13's cudaDeviceProp has no clockRate: the clock comes from deviceGetAttribute.
        return {"name": s.name.encode(), "multiProcessorCount": s.sms, "major": s.cc[0], "minor": s.cc[1],
                "totalGlobalMem": 80 << 30, "warpSize": 32, "maxThreadsPerBlock": MAX_THREADS_PER_BLOCK}

    def deviceGetAttribute(self, attr: int, index: int) -> int:
        s = self._spec(index)
        if attr == CUDA_DEV_ATTR_CLOCK_RATE:
            return s.clock_khz
        raise CUDARuntimeError(f"cudaErrorInvalidValue: attribute {attr} is not simulated")

    def driverGetVersion(self) -> int:
        return self.sim.driver_version

    def runtimeGetVersion(self) -> int:
        return self.sim.driver_version


@dataclass
class DeviceSpec:
    name: str = "Simulated GPU"
    sms: int = 2
    cc: tuple[int, int] = (9, 0)
    clock_khz: int = 1_980_000


@dataclass
class Simulator:
    """The `cupy` module as the backend sees it. `sample_blocks`: on a grid of more than twice
    that many blocks run only the first and last that many (for launch plans too big to run in
    full on a CPU; the launch is recorded as sampled)."""

    devices: int = 1
    sms: int = 2
    name: str = "Simulated GPU"
    driver_version: int = 13000
    sample_blocks: int | None = None
    launches: list[Launch] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.specs = [DeviceSpec(f"{self.name} {i}" if self.devices > 1 else self.name, self.sms)
                      for i in range(self.devices)]
        self._local = threading.local()
        self.uint32, self.int32, self.uint64, self.int64 = np.uint32, np.int32, np.uint64, np.int64
        self.ndarray = SimArray
        self.cuda = _CudaNamespace(self)
        self.__version__ = "14.2.0-simulated"

    def current_device(self) -> int:
        return getattr(self._local, "device", 0)

    def zeros(self, shape, dtype=np.float64) -> SimArray:
        return SimArray(self.current_device(), shape, dtype)

    def RawModule(self, **kwargs) -> RawModule:
        return RawModule(self, **kwargs)


class _CudaNamespace:
    def __init__(self, sim: Simulator):
        self.runtime = _Runtime(sim)
        self._sim = sim

    def Device(self, device: int | None = None) -> _Device:
        return _Device(self._sim, device)


def install(sim: Simulator) -> Simulator:
    """Make `import cupy` give the simulator (for a subprocess that runs the `miner` command)."""
    sys.modules["cupy"] = sim  # type: ignore[assignment]
    return sim
