"""The numba CPU search: a vectorized candidate count per chunk, an exact scalar pass on demand.

The hot loop (`count_candidates`, generated) counts, for a chunk of nonces, how many hashes have a
top 32-bit limb at or below the target's. Only a chunk with a non-zero count is searched again
with the exact path (`hash_words`, all eight words, full 256-bit comparison). At difficulty 1 and
above a chunk of 4096 nonces has a candidate with probability below 1e-6, so the exact pass costs
nothing; at regtest-easy targets it runs on every chunk, which is correct and merely slower.

Installed as `miner.kernels.cpu`. numba's on-disk cache is keyed by this file's path and stamp,
not by the module name it was compiled under, so a change of module name must come with a change
to this file (as this paragraph did) or a cache pickled under the old name would still load.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from miner.kernels import (
    cpu_shani,  # importing compiles nothing; only the SHA search compiles its kernel
)
from miner.kernels.cpu_sha256d import count_candidates, hash_words
from numba import njit

CHUNK = 4096  # nonces per vectorized pass


@njit(nogil=True, cache=True, boundscheck=False)
def _bswap(x):
    return np.uint32(((x >> 24) & 0xFF) | ((x >> 8) & 0xFF00) | ((x << 8) & 0xFF0000)
                     | ((x << 24) & 0xFF000000))


@njit(nogil=True, cache=True, boundscheck=False)
def meets_target(words, target):
    """Full 256-bit test: the hash, as a little-endian number, <= target (limbs LS first)."""
    for i in range(7, -1, -1):
        limb = _bswap(words[i])
        if limb < target[i]:
            return True
        if limb > target[i]:
            return False
    return True


@njit(nogil=True, cache=True, boundscheck=False)
def _exact(job, target, base, lo, hi, out, total):
    """Exact pass over nonces base+lo .. base+hi-1: full hash, full 256-bit comparison."""
    words = np.empty(8, dtype=np.uint32)
    for k in range(lo, hi):
        hash_words(job, np.uint32(base + k), words)
        if meets_target(words, target):
            if total < out.shape[0]:
                out[total] = base + k
            total += 1
    return total


SIMD, SHA = 0, 1  # the kernels a search can run (see `cpu_select`)
_KERNEL_SOURCES = ("cpu.py", "cpu_sha256d.py", "cpu_shani.py", "cpu_width.py")


def default_threads() -> int:
    """Threads a CPU search runs on by default: every core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def kernel_source_digest() -> str:
    """A digest of every file a compiled search is built from (see `make_search`)."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _KERNEL_SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def make_search(kernel: int):
    """The chunked search over one kernel's `count_candidates(job, nonce0, pairs, t7)`.

    Both kernels share this contract and the exact pass. `kernel` is a constant of the closure,
    so numba prunes the other kernel's branch before typing it: the SIMD search never compiles
    the SHA kernel, whose instructions a CPU without SHA extensions cannot even assemble.

    numba's cache key holds the closure's values, and its staleness check looks only at this
    file, so `sources` (a digest of the kernels' files) is in the closure too: a regenerated
    kernel then misses the cache instead of loading the search linked with the old one.
    """
    sources = kernel_source_digest()

    @njit(nogil=True, cache=True, boundscheck=False)
    def search(job, target, nonce_start, count, out):
        """Search [nonce_start, nonce_start+count); store up to len(out) hits; return the total.

        `job` holds the midstate (8 words) and the three tail words; `target` eight limbs.
        """
        built_from = sources  # noqa: F841 - part of the cache key, see above
        total = 0
        t7 = np.uint32(target[7])
        pos = 0
        while pos < count:
            n = min(CHUNK, count - pos)
            base = nonce_start + pos
            pairs = n // 2  # the kernels count nonces in pairs
            if pairs:
                if kernel == SHA:
                    hits = cpu_shani.count_candidates(job, np.uint32(base), pairs, t7)
                else:
                    hits = count_candidates(job, np.uint32(base), pairs, t7)
                if hits != 0:
                    total = _exact(job, target, base, 0, 2 * pairs, out, total)
            if n % 2:
                total = _exact(job, target, base, n - 1, n, out, total)
            pos += n
        return total

    return search


search = make_search(SIMD)  # the SIMD kernel's search; `cpu_select.search_function` gives either


def job_array(midstate, tail) -> np.ndarray:
    return np.array(list(midstate) + list(tail), dtype=np.uint32)


def target_array(words) -> np.ndarray:
    return np.array(words, dtype=np.uint32)
