"""The numba CPU scrypt backend: `miner.kernels.cpu_scrypt` on every core, one thread per core.

Each thread keeps its own scratch (the lanes' state and their 128 KiB-per-lane pads, 2 MiB for
16 lanes), made once, and takes one contiguous slice of a unit, as the SHA-256d backend does.
Which build of the kernel runs (lane count, pad layout, interleaving) is
`cpu_scrypt_select.choose`'s answer: named, or for `auto` the fastest as measured once on this
CPU. numba caches the builds on disk keyed by the CPU, so only a first run compiles them, and
that happens in the background while hashlib mines (`mining/startup.py`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from miner.backends.base import Backend
from miner.backends.work import KernelWork
from miner.errors import InvalidInput
from miner.kernels import cpu_scrypt, cpu_scrypt_select
from miner.kernels.cpu import default_threads


class CpuScryptBackend(Backend):
    kind = "cpu"
    algorithms = frozenset({"scrypt"})

    def __init__(self, threads: int | None = None, max_hits: int = 64, name: str = "cpu",
                 variant: str = "auto"):
        threads = default_threads() if threads is None else threads
        if threads < 1:
            raise InvalidInput(f"threads must be at least 1, got {threads}")
        variant = cpu_scrypt_select.check_choice(variant)
        super().__init__(name, f"numba scrypt, {threads} thread(s)", max_hits)
        self.threads = threads
        self.variant_preference = variant
        self.kernel: cpu_scrypt.Kernel | None = None  # resolved at warm-up: `auto` may measure first
        self.variant_reason = ""
        # Called just before `auto` times the variants (only when a timing is due), as for SHA-256d.
        self.before_measure = None
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="cpu-scrypt") if threads > 1 else None
        self._local = threading.local()
        self.compile_seconds: float | None = None

    @property
    def initial_batch(self) -> int:
        return 16 * self.threads * 16  # a fraction of a second of scrypt, whichever variant runs

    def resolve_variant(self) -> cpu_scrypt.Kernel:
        """Settle which variant runs (for `auto` this may measure them all, once per CPU)."""
        if self.kernel is None:
            name, self.variant_reason = cpu_scrypt_select.choose(self.variant_preference,
                                                                 before_measure=self.before_measure)
            self.kernel = cpu_scrypt.kernel(name)
            self.device = (f"numba scrypt, {name}: {self.kernel.variant.describe()}, "
                           f"{self.threads} thread(s)")
        return self.kernel

    def _scratch(self) -> tuple[np.ndarray, np.ndarray]:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = self.kernel.scratch()
        return scratch

    def loads_from_cache(self) -> bool:
        """Whether the warm-up would only load compiled code (no compile, no measurement)."""
        name = self.kernel.variant.name if self.kernel else (
            self.variant_preference if self.variant_preference != "auto" else cpu_scrypt_select.stored_choice())
        return name is not None and cpu_scrypt_select.is_compiled(name)

    def warm_up_words(self) -> str:
        if self.loads_from_cache():
            return "loading its scrypt kernel from the cache (slower than the usual second: a busy machine)"
        return "compiling its scrypt kernel (first use on this CPU; later runs load it from the cache)"

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) before timing anything; records how long it took."""
        if self.compile_seconds is None:
            t0 = time.perf_counter()
            self.resolve_variant()
            x, v = self._scratch()
            self.kernel.search(np.zeros(19, dtype=np.uint32), np.zeros(8, dtype=np.uint32), 0, 1,
                               np.zeros(1, dtype=np.int64), x, v)
            self.compile_seconds = time.perf_counter() - t0

    def _search(self, work: KernelWork, nonce_start: int, count: int) -> tuple[list[int], int]:
        self.warm_up()
        kernel = self.kernel
        prefix = cpu_scrypt.prefix_words(work.header_prefix)
        target = np.array(work.target_words, dtype=np.uint32)
        parts = min(self.threads, max(1, -(-count // kernel.width)))
        size = -(-count // parts)
        slices = [(s, min(size, nonce_start + count - s)) for s in range(nonce_start, nonce_start + count, size)]
        outs = [np.zeros(self.max_hits, dtype=np.int64) for _ in slices]

        def run(i: int) -> int:
            start, n = slices[i]
            x, v = self._scratch()
            return int(kernel.search(prefix, target, start, n, outs[i], x, v))

        totals = list(self._pool.map(run, range(len(slices)))) if self._pool and len(slices) > 1 \
            else [run(i) for i in range(len(slices))]
        nonces: list[int] = []
        for out, total in zip(outs, totals):
            nonces.extend(int(x) for x in out[:min(total, self.max_hits)])
        return nonces[:self.max_hits], sum(totals)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
