"""The numba CPU scrypt search: Litecoin's scrypt(header, header, N=1024, r=1, p=1, 32 bytes).

scrypt is PBKDF2-HMAC-SHA256 (one iteration) to 128 bytes, ROMix (1,024 steps writing a 128 KiB
scratchpad, 1,024 reading it back at data-dependent places, each step a BlockMix of two
salsa20/8 cores), and PBKDF2-HMAC-SHA256 again to 32 bytes (RFC 7914). Almost all the work is
salsa20/8, so that is where the lanes are: `width` nonces run in lockstep, every state word held
as a row of `width` values (`x[word * width + lane]`), and each salsa20/8 is one loop over the
lanes whose body is straight-line code, which LLVM turns into vector instructions (16 lanes of
32 bits in a zmm register with AVX-512, 8 in a ymm with AVX2).

How many lanes, how the pad is laid out and whether two lane groups are interleaved is not one
answer for every CPU, so the kernel is built in several variants (`VARIANTS`) and
`cpu_scrypt_select` measures which is fastest on the CPU at hand, once, and keeps the answer.
The choice turns on the pad against the core's L2 and on how the pad's random reads use cache
lines:

* Each nonce's pad is 128 KiB, so 16 lanes take 2 MiB a thread and 8 lanes 1 MiB. Zen 4 has
  1 MiB of L2 a core and a large, fast L3 behind it; an Intel Ice Lake server core has 1.25 MiB
  of L2 and a mesh L3 with about twice Zen's latency. 8 lanes fit Ice Lake's L2; 16 do not fit
  either.
* `word` pad layout, `V[step, word, lane]`: a write is one contiguous row of the state (vector
  stores), but a read of one lane's 128-byte block touches 32 cache lines (one per word, 4
  useful bytes in each 64), so the 1,024 reads of a hash pull 2 MiB through the caches for each
  lane instead of 128 KiB.
* `quad` pad layout, `V[lane // 4, step, word, lane % 4]`: four lanes' words side by side, so a
  write is 16-byte pieces of the state's rows (still vector stores) and a read of one lane's
  block touches 8 cache lines instead of 32. Each lane's block contiguous (`V[lane, step, word]`,
  2 lines a read) was tried and dropped: the write is then a transpose, which LLVM made 32
  `vpscatterdd` a step, and it ran at half the speed of the `word` layout on Zen 4.
* `groups` = 2: two independent 8-lane groups in one loop body (8-lane ymm vectors, two
  dependency chains at once). On Ice Lake 512-bit operations issue on two ports and 256-bit
  ones on three, and rotates of zmm registers only on one, so two ymm chains can match or beat
  one zmm chain; on Zen 4 a zmm operation is two 256-bit halves, so width buys little there
  beyond fewer instructions.

The SHA-256 of the two PBKDF2 passes (about a twentieth of the work) runs per lane, scalar.
Every shortcut here is plain RFC 7914; the tests compare every variant with `hashlib.scrypt`.
Installed as `miner.kernels.cpu_scrypt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from numba import njit

from .cpu import (
    meets_target,  # the SHA-256d kernel's full 256-bit test: the same comparison
)
from .cpu_salsa import mix_lane
from .cpu_sha256_scalar import bswap32, hmac_outer, hmac_states, sha256_compress
from .cpu_width import full_width, kept_apart

u32 = np.uint32
N = 1024  # scrypt's cost (Litecoin's)
PAD_BYTES_PER_LANE = N * 128


@dataclass(frozen=True)
class Variant:
    """One build of the kernel: `lanes` per vector group, `groups` such groups interleaved in
    one loop (so `width` = lanes x groups nonces in flight a thread), and the pad layout."""
    name: str
    lanes: int
    groups: int
    pad: str  # "word": V[step, word, lane]; "quad": V[lane // 4, step, word, lane % 4]
    why: str

    @property
    def width(self) -> int:
        return self.lanes * self.groups

    @property
    def pad_bytes(self) -> int:
        return self.width * PAD_BYTES_PER_LANE

    @property
    def vector_bits(self) -> int:
        """The vector width the salsa20/8 loop is meant to get where the CPU has it."""
        return 32 * self.lanes

    def describe(self) -> str:
        shape = f"{self.lanes} lanes" if self.groups == 1 else f"{self.groups} x {self.lanes} lanes interleaved"
        return f"{shape}, {self.pad}-major pad of {self.pad_bytes >> 20 or self.pad_bytes / 2**20:g} MiB"


# Measured on an AMD EPYC (Zen 4, 1 MiB L2 a core), 2026-12-01, alternating builds: the `word`
# layout at 16 lanes 25.0 and 25.7 kH/s a core, at 8 lanes 22.2 and 22.4, at 4 lanes 15.0.
VARIANTS = {v.name: v for v in (
    Variant("16w", 16, 1, "word", "16 zmm lanes, pad rows as the state's rows (the first build)"),
    Variant("16q", 16, 1, "quad", "16 zmm lanes, 8 cache lines a pad read instead of 32"),
    Variant("8w", 8, 1, "word", "8 ymm lanes, 1 MiB of pads: fits a 1.25 MiB L2 (Ice Lake server)"),
    Variant("8q", 8, 1, "quad", "8 ymm lanes in 1 MiB, 8 cache lines a pad read"),
    Variant("2x8w", 8, 2, "word", "two 8-lane ymm groups in one loop: two chains on three vector ports"),
)}
DEFAULT = "16w"  # what runs until a measurement says otherwise (the build first measured fastest on Zen 4)


@njit(nogil=True, cache=True, boundscheck=False)
def pbkdf2_first(header, x, lane, width, istate, ostate, block, w, tmp, t):
    """B = PBKDF2-HMAC-SHA256(header, header, 1, 128 bytes), as 32 little-endian words into
    lane `lane` of `x` (rows of `width`); leaves the HMAC states for the last pass in istate/ostate."""
    hmac_states(header, istate, ostate, block, w)
    salted = istate.copy()
    sha256_compress(salted, header[:16], w)  # the salt's first 64 bytes, shared by the 4 blocks
    for i in range(4):
        tmp[:] = salted
        for k in range(4):
            block[k] = header[16 + k]
        block[4] = u32(i + 1)
        block[5] = u32(0x80000000)
        for k in range(6, 15):
            block[k] = 0
        block[15] = u32(1184)  # 64 + 80 + 4 bytes
        sha256_compress(tmp, block, w)
        hmac_outer(ostate, tmp, t, block, w)
        for k in range(8):
            x[(8 * i + k) * width + lane] = bswap32(t[k])


@njit(nogil=True, cache=True, boundscheck=False)
def pbkdf2_last(x, lane, width, istate, ostate, block, w, tmp, out):
    """PBKDF2-HMAC-SHA256(header, B', 1, 32 bytes) into `out` (8 big-endian words: the hash's
    bytes, compared as a little-endian number, as sha256d's are)."""
    tmp[:] = istate
    for half in range(2):
        for k in range(16):
            block[k] = bswap32(x[(16 * half + k) * width + lane])
        sha256_compress(tmp, block, w)
    block[0] = u32(1)
    block[1] = u32(0x80000000)
    for k in range(2, 15):
        block[k] = 0
    block[15] = u32(1568)  # 64 + 128 + 4 bytes
    sha256_compress(tmp, block, w)
    hmac_outer(ostate, tmp, out, block, w)


@dataclass(frozen=True)
class Kernel:
    """One variant's compiled functions (compiled on first call, cached on disk by numba)."""
    variant: Variant
    block_mix: object
    pad_store: object
    pad_xor: object
    romix: object
    scrypt_lanes: object
    search: object

    @property
    def width(self) -> int:
        return self.variant.width

    def scratch(self) -> tuple[np.ndarray, np.ndarray]:
        """One thread's scratch: the state and the 128 KiB-per-lane pad."""
        return np.zeros(32 * self.width, dtype=np.uint32), np.zeros(N * 32 * self.width, dtype=np.uint32)


@cache
def kernel(name: str = DEFAULT) -> Kernel:
    """The kernel of variant `name`. Its shape is held in constants of the closures, so LLVM sees
    every stride as a number (a lane count read from an array shape kept the loop scalar:
    5.9 kH/s, no faster than one lane), and numba's cache key holds them, so each variant is
    cached apart. numba's staleness check looks only at this file, so a digest of every file the
    kernel is built from is a closure constant too: a change to the salsa20/8 or SHA-256 code
    then misses the cache instead of loading code linked with the old one."""
    variant = VARIANTS[name]
    L, G, W = variant.lanes, variant.groups, variant.width
    sources = source_digest()
    quad = variant.pad == "quad"

    @njit(nogil=True, cache=True, boundscheck=False)
    def block_mix(x):
        """BlockMix on every lane of `x`, one loop over `L` lanes whose body mixes one lane of
        each of the `G` groups: vectors of `L` lanes, `G` independent chains."""
        built_from = sources  # noqa: F841 - in the cache key, see `kernel`
        full_width()
        for lane in range(L):
            mix_lane(x, lane, W)
            if G == 2:
                mix_lane(x, lane + L, W)

    @njit(nogil=True, cache=True, boundscheck=False)
    def pad_store(x, v, i):
        """Store the state as pad row `i` of every lane (the first half of ROMix, one step)."""
        built_from = sources  # noqa: F841 - in the cache key, see `kernel`
        kept_apart()
        i = i & (N - 1)  # a no-op that tells LLVM the row is not negative: no wraparound test per word
        if quad:
            for g in range(W // 4):
                base = (g * N + i) * 128
                for k in range(32):
                    for q in range(4):
                        v[base + k * 4 + q] = x[k * W + g * 4 + q]
        else:
            base = i * 32 * W
            for k in range(32 * W):
                v[base + k] = x[k]

    @njit(nogil=True, cache=True, boundscheck=False)
    def pad_xor(x, v):
        """XOR into each lane the pad row its state names (Integerify: the last block's first
        word, mod N): the second half of ROMix, one step, the pad's random reads."""
        built_from = sources  # noqa: F841 - in the cache key, see `kernel`
        kept_apart()
        for lane in range(W):
            j = x[16 * W + lane] & u32(N - 1)
            if quad:
                base = ((lane >> 2) * N + j) * 128 + (lane & 3)
                for k in range(32):
                    x[k * W + lane] ^= v[base + k * 4]
            else:
                base = j * 32 * W + lane
                for k in range(32):
                    x[k * W + lane] ^= v[base + k * W]

    @njit(nogil=True, cache=True, boundscheck=False)
    def romix(x, v):
        """scrypt's ROMix with N = 1024 on every lane of `x`, pad `v` in this variant's layout."""
        built_from = sources  # noqa: F841 - in the cache key, see `kernel`
        for i in range(N):
            pad_store(x, v, i)
            block_mix(x)
        for _ in range(N):
            pad_xor(x, v)
            block_mix(x)

    @njit(nogil=True, cache=True, boundscheck=False)
    def scrypt_lanes(prefix, nonce0, n, x, v, hashes):
        """scrypt of the headers `prefix` (19 big-endian words) + nonce for nonce0 .. nonce0+n-1
        (n <= W), each hash into `hashes[lane]` (8 big-endian words)."""
        built_from = sources  # noqa: F841 - in the cache key, see `kernel`
        header = np.empty(20, dtype=np.uint32)
        header[:19] = prefix
        istates = np.empty((W, 8), dtype=np.uint32)
        ostates = np.empty((W, 8), dtype=np.uint32)
        block = np.empty(16, dtype=np.uint32)
        w = np.empty(64, dtype=np.uint32)
        tmp = np.empty(8, dtype=np.uint32)
        t = np.empty(8, dtype=np.uint32)
        for lane in range(W):
            header[19] = bswap32(u32(nonce0 + min(lane, n - 1)))  # idle lanes repeat the last nonce
            pbkdf2_first(header, x, lane, W, istates[lane], ostates[lane], block, w, tmp, t)
        romix(x, v)
        for lane in range(n):
            pbkdf2_last(x, lane, W, istates[lane], ostates[lane], block, w, tmp, hashes[lane])

    @njit(nogil=True, cache=True, boundscheck=False)
    def search(prefix, target, nonce_start, count, out, x, v):
        """Search [nonce_start, nonce_start+count) lane group by lane group; store up to len(out)
        hits, return the total. `x` and `v` are the caller's scratch (`Kernel.scratch()`), so a
        thread allocates them once."""
        built_from = sources  # noqa: F841 - in the cache key, see `kernel`
        hashes = np.empty((W, 8), dtype=np.uint32)
        total = 0
        pos = 0
        while pos < count:
            n = min(W, count - pos)
            scrypt_lanes(prefix, nonce_start + pos, n, x, v, hashes)
            for lane in range(n):
                if meets_target(hashes[lane], target):
                    if total < out.shape[0]:
                        out[total] = nonce_start + pos + lane
                    total += 1
            pos += n
        return total

    return Kernel(variant, block_mix, pad_store, pad_xor, romix, scrypt_lanes, search)


SOURCES = ("cpu_scrypt.py", "cpu_salsa.py", "cpu_sha256_scalar.py", "cpu_width.py", "cpu.py")


def source_digest() -> str:
    """A digest of every file a compiled scrypt kernel is built from."""
    import hashlib
    from pathlib import Path
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def prefix_words(header_prefix: bytes) -> np.ndarray:
    """The 76-byte header prefix as 19 big-endian words."""
    return np.frombuffer(header_prefix, dtype=">u4").astype(np.uint32)
