"""The CUDA scrypt backend: kernels/scrypt.cu compiled once by NVRTC through CuPy, one backend
per GPU.

A thread hashes one nonce at a time with its own scratchpad in global memory (128 KiB / lookup
gap), so the pad, not the register file, sets how many threads run: as many as the device keeps
resident (2,048 per SM), capped at a quarter of its memory. A unit is one launch in which each
thread strides over the range.
"""

from __future__ import annotations

import time

import numpy as np

from miner.backends.base import Backend
from miner.backends.cuda import device_count
from miner.backends.work import KernelWork
from miner.errors import InvalidInput
from miner.kernels.cuda_scrypt_job import (
    KERNEL_NAME,
    SOURCE,
    N,
    job_words,
    nvrtc_options,
    pad_words,
)

RESIDENT_THREADS_PER_SM = 2048
BLOCK = 64  # threads a block: each holds ~100 registers of state, so small blocks schedule best


def _cupy():
    from miner.backends import cuda
    return cuda.cupy  # the module the SHA-256d backend uses (the tests' simulator included)


class CudaScryptBackend(Backend):
    kind = "cuda"
    algorithms = frozenset({"scrypt"})

    def __init__(self, index: int = 0, max_hits: int = 64, lookup_gap: int = 1, threads: int | None = None):
        """`threads`: how many run at once (default: as many as the device keeps resident, within
        a quarter of its memory for their pads)."""
        count, why = device_count()
        if count == 0:
            raise InvalidInput(f"backend 'cuda' is not available here: {why}")
        if not 0 <= index < count:
            raise InvalidInput(f"no CUDA device {index}: this machine has {count}")
        nvrtc_options(lookup_gap)  # ValueError for a gap the kernel does not take
        cupy = _cupy()
        self.index, self.lookup_gap = index, lookup_gap
        with cupy.cuda.Device(index):
            props = cupy.cuda.runtime.getDeviceProperties(index)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            self.sms = int(props["multiProcessorCount"])
            memory = int(props.get("totalGlobalMem", 0)) or 1 << 30
        per_thread = 4 * (N // lookup_gap) * 32
        fit = min(self.sms * RESIDENT_THREADS_PER_SM, memory // 4 // per_thread)
        self.threads = max(BLOCK, (threads or fit) // BLOCK * BLOCK)
        super().__init__(f"cuda:{index}", f"{name}, scrypt, lookup gap {lookup_gap}", max_hits)
        self._module = self._kernel = self._job_symbol = self._pad = self._hits = None
        self.compile_seconds: float | None = None

    @property
    def initial_batch(self) -> int:
        return self.threads

    def warm_up_words(self) -> str:
        return "compiling its scrypt kernel with NVRTC (or loading CuPy's cached build of it)"

    def warm_up(self) -> None:
        if self._kernel is not None:
            return
        cupy = _cupy()
        t0 = time.perf_counter()
        with cupy.cuda.Device(self.index):
            self._module = cupy.RawModule(code=SOURCE.read_text(), options=nvrtc_options(self.lookup_gap))
            self._kernel = self._module.get_function(KERNEL_NAME)
            self._job_symbol = self._module.get_global("c_job")
            self._pad = cupy.zeros(pad_words(self.threads, self.lookup_gap), dtype=cupy.uint32)
            cupy.cuda.Device(self.index).synchronize()
        self.compile_seconds = time.perf_counter() - t0

    def _search(self, work: KernelWork, nonce_start: int, count: int) -> tuple[list[int], int]:
        self.warm_up()
        cupy = _cupy()
        job = job_words(work.header_prefix, work.target_words)
        with cupy.cuda.Device(self.index):
            if self._hits is None or len(self._hits) != 1 + self.max_hits:
                self._hits = cupy.zeros(1 + self.max_hits, dtype=cupy.uint32)
            self._hits.fill(0)
            self._job_symbol.copy_from_host(job.ctypes.data, job.nbytes)
            threads = min(self.threads, -(-count // BLOCK) * BLOCK)
            self._kernel((threads // BLOCK,), (BLOCK,),
                         (np.uint32(nonce_start), np.uint32(count), self._pad, self._hits,
                          np.uint32(self.max_hits)))
            out = self._hits.get()
        total = int(out[0])
        return [int(x) for x in out[1:1 + min(total, self.max_hits)]], total
