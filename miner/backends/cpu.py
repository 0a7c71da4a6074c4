"""The numba CPU backend: the SIMD or the SHA-extensions kernel on every core, one thread per core.

The kernel is compiled with `nogil=True`, so plain threads run it in parallel; each unit is split
into one contiguous slice per thread. numba caches the compiled machine code on disk keyed by the
CPU model and features, so a second run starts fast and a different CPU recompiles for itself
rather than loading code it cannot run. Which kernel runs is `cpu_select.choose`'s answer:
named by `--cpu-kernel`, or for `auto` the faster one as measured once on this CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from miner.backends.base import Backend
from miner.backends.work import KernelWork
from miner.errors import InvalidInput
from miner.kernels import cpu as kernel
from miner.kernels import cpu_select
from miner.kernels.cpu import default_threads


class CpuBackend(Backend):
    kind = "cpu"

    def __init__(self, threads: int | None = None, max_hits: int = 64, name: str = "cpu",
                 kernel: str = "auto"):
        threads = default_threads() if threads is None else threads
        if threads < 1:
            raise InvalidInput(f"threads must be at least 1, got {threads}")
        kernel = cpu_select.check_choice(kernel)
        super().__init__(name, f"numba SHA-256d, {threads} thread(s)", max_hits)
        self.threads = threads
        self.kernel_preference = kernel
        self.kernel: str | None = None  # resolved at warm-up: `auto` may measure first
        self._search_fn = None
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="cpu-kernel") if threads > 1 else None
        self.compile_seconds: float | None = None
        # Called just before `auto` times the kernels (only when a timing is due): the miner
        # stops its hashlib stand-in there, so the two kernels are not timed beside it.
        self.before_measure: Callable[[], None] | None = None

    @property
    def initial_batch(self) -> int:
        return 1 << 18

    def resolve_kernel(self) -> str:
        """Settle which kernel runs (for `auto` this may measure both, once per CPU)."""
        if self.kernel is None:
            self.kernel, _why = cpu_select.choose(self.kernel_preference, before_measure=self.before_measure)
            self._search_fn = cpu_select.search_function(self.kernel)
            self.device = f"numba SHA-256d, {cpu_select.describe(self.kernel)}, {self.threads} thread(s)"
        return self.kernel

    def loads_from_cache(self) -> bool:
        """Whether the warm-up would only load compiled code (no compile, no measurement)."""
        kernel = self.kernel or (self.kernel_preference if self.kernel_preference != "auto"
                                 else cpu_select.stored_choice())
        return kernel is not None and cpu_select.is_compiled(kernel)

    def warm_up_words(self) -> str:
        if self.kernel is None and self.kernel_preference == "auto" and len(cpu_select.available()) > 1:
            if cpu_select.has_provisional_choice():
                return ("timing its two kernels again (the choice kept for this CPU was timed while other "
                        "programs were busy)")
            if cpu_select.stored_choice() is None:
                compiled = all(cpu_select.is_compiled(k) for k in cpu_select.available())
                return ("timing its two kernels to keep the faster for this CPU" if compiled else
                        "compiling its kernels (first run on this CPU; later runs load them from the cache), "
                        "then timing them to keep the faster")
        if self.loads_from_cache():
            return "loading its kernel from the cache (slower than the usual second: a busy machine)"
        return "compiling its kernel (first use on this CPU; later runs load it from the cache)"

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) before timing anything; records how long it took."""
        if self.compile_seconds is None:
            t0 = time.perf_counter()
            self.resolve_kernel()
            job = np.zeros(11, dtype=np.uint32)
            target = np.full(8, 0xFFFFFFFF, dtype=np.uint32)
            self._search_fn(job, target, 0, 2 * kernel.CHUNK + 1, np.zeros(1, dtype=np.int64))
            self.compile_seconds = time.perf_counter() - t0

    def _search(self, work: KernelWork, nonce_start: int, count: int) -> tuple[list[int], int]:
        self.warm_up()
        search = self._search_fn
        job = kernel.job_array(work.midstate, work.tail)
        target = kernel.target_array(work.target_words)
        slices = self._slices(nonce_start, count)
        outs = [np.zeros(self.max_hits, dtype=np.int64) for _ in slices]

        def run(i: int) -> int:
            start, n = slices[i]
            return int(search(job, target, start, n, outs[i]))

        totals = list(self._pool.map(run, range(len(slices)))) if self._pool and len(slices) > 1 \
            else [run(0)]
        nonces: list[int] = []
        for out, total in zip(outs, totals):
            nonces.extend(int(x) for x in out[:min(total, self.max_hits)])
        return nonces[:self.max_hits], sum(totals)

    def _slices(self, nonce_start: int, count: int) -> list[tuple[int, int]]:
        """Contiguous per-thread slices, multiples of the kernel's chunk where possible."""
        parts = min(self.threads, max(1, count // kernel.CHUNK))
        size = -(-count // parts)
        size = -(-size // kernel.CHUNK) * kernel.CHUNK if count >= parts * kernel.CHUNK else size
        out = []
        start, end = nonce_start, nonce_start + count
        while start < end:
            n = min(size, end - start)
            out.append((start, n))
            start += n
        return out

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=True)
