"""The numba CPU scrypt search: Litecoin's scrypt(header, header, N=1024, r=1, p=1, 32 bytes).

scrypt is PBKDF2-HMAC-SHA256 (one iteration) to 128 bytes, ROMix (1,024 steps writing a 128 KiB
scratchpad, 1,024 reading it back at data-dependent places, each step a BlockMix of two
salsa20/8 cores), and PBKDF2-HMAC-SHA256 again to 32 bytes (RFC 7914). Almost all the work is
salsa20/8, so that is where the lanes are: `LANES` nonces run in lockstep, every state word
held as a row of `LANES` values (`x[word, lane]`), and each salsa20/8 is one loop over the lanes
whose body is straight-line code, which LLVM turns into vector instructions as wide as the CPU
has (16 lanes of 32 bits in a zmm register with AVX-512, 8 in a ymm with AVX2). The scratchpad
of a lane group is `V[step, word, lane]`, 128 KiB per lane; the lane count trades vector width
against cache (`miner.bench` measures which fits).

The SHA-256 of the two PBKDF2 passes (about a twentieth of the work) runs per lane, scalar.
Every shortcut here is plain RFC 7914; the tests compare every step with `hashlib.scrypt`.
Installed as `miner.kernels.cpu_scrypt`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .cpu import (
    meets_target,  # the SHA-256d kernel's full 256-bit test: the same comparison
)
from .cpu_sha256_scalar import bswap32, hmac_outer, hmac_states, sha256_compress
from .cpu_width import full_width

u32 = np.uint32
N = 1024  # scrypt's cost (Litecoin's)
# Nonces in lockstep: 16 fills a zmm register of 32-bit words (AVX-512), two ymm with AVX2. A
# compile-time constant, so every row of the state is a fixed distance from the others and LLVM
# can prove the lanes independent (with the lane count read from an array shape it could not,
# and kept the loop scalar: 5.9 kH/s, no faster than one lane). Measured on an AMD EPYC with a
# 1 MiB L2 a core (2026-12-01, alternating builds): 16 lanes, whose pads take 2 MiB, 25.0 and
# 25.7 kH/s a core; 8 lanes, whose 1 MiB fits the L2, 22.2 and 22.4; 4 lanes 15.0. The
# scratchpad's random reads are served from L3 well enough that vector width wins.
LANES = 16

@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _rotl(x, n):
    return u32(u32(x << u32(n)) | u32(x >> u32(32 - n)))


@njit(nogil=True, cache=True, boundscheck=False)
def pbkdf2_first(header, x, lane, istate, ostate, block, w, tmp, t):
    """B = PBKDF2-HMAC-SHA256(header, header, 1, 128 bytes), as 32 little-endian words into
    lane `lane` of `x`; leaves the HMAC states for the last pass in istate/ostate."""
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
            x[(8 * i + k) * LANES + lane] = bswap32(t[k])


@njit(nogil=True, cache=True, boundscheck=False)
def pbkdf2_last(x, lane, istate, ostate, block, w, tmp, out):
    """PBKDF2-HMAC-SHA256(header, B', 1, 32 bytes) into `out` (8 big-endian words: the hash's
    bytes, compared as a little-endian number, as sha256d's are)."""
    tmp[:] = istate
    for half in range(2):
        for k in range(16):
            block[k] = bswap32(x[(16 * half + k) * LANES + lane])
        sha256_compress(tmp, block, w)
    block[0] = u32(1)
    block[1] = u32(0x80000000)
    for k in range(2, 15):
        block[k] = 0
    block[15] = u32(1568)  # 64 + 128 + 4 bytes
    sha256_compress(tmp, block, w)
    hmac_outer(ostate, tmp, out, block, w)


@njit(nogil=True, cache=True, boundscheck=False)
def block_mix(x):
    """scrypt's BlockMix with r = 1 on every lane of `x` (32 rows of LANES words), in place:
    x0 ^= x1, x0 = salsa20/8(x0); x1 ^= x0, x1 = salsa20/8(x1). One loop over the lanes whose
    body is straight-line code, so it runs as vectors."""
    full_width()
    for lane in range(LANES):
        b0 = x[0 * LANES + lane] ^ x[16 * LANES + lane]
        b1 = x[1 * LANES + lane] ^ x[17 * LANES + lane]
        b2 = x[2 * LANES + lane] ^ x[18 * LANES + lane]
        b3 = x[3 * LANES + lane] ^ x[19 * LANES + lane]
        b4 = x[4 * LANES + lane] ^ x[20 * LANES + lane]
        b5 = x[5 * LANES + lane] ^ x[21 * LANES + lane]
        b6 = x[6 * LANES + lane] ^ x[22 * LANES + lane]
        b7 = x[7 * LANES + lane] ^ x[23 * LANES + lane]
        b8 = x[8 * LANES + lane] ^ x[24 * LANES + lane]
        b9 = x[9 * LANES + lane] ^ x[25 * LANES + lane]
        b10 = x[10 * LANES + lane] ^ x[26 * LANES + lane]
        b11 = x[11 * LANES + lane] ^ x[27 * LANES + lane]
        b12 = x[12 * LANES + lane] ^ x[28 * LANES + lane]
        b13 = x[13 * LANES + lane] ^ x[29 * LANES + lane]
        b14 = x[14 * LANES + lane] ^ x[30 * LANES + lane]
        b15 = x[15 * LANES + lane] ^ x[31 * LANES + lane]
        (b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15) = _salsa8(
            b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15)
        x[0 * LANES + lane] = b0
        x[1 * LANES + lane] = b1
        x[2 * LANES + lane] = b2
        x[3 * LANES + lane] = b3
        x[4 * LANES + lane] = b4
        x[5 * LANES + lane] = b5
        x[6 * LANES + lane] = b6
        x[7 * LANES + lane] = b7
        x[8 * LANES + lane] = b8
        x[9 * LANES + lane] = b9
        x[10 * LANES + lane] = b10
        x[11 * LANES + lane] = b11
        x[12 * LANES + lane] = b12
        x[13 * LANES + lane] = b13
        x[14 * LANES + lane] = b14
        x[15 * LANES + lane] = b15
        (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15) = _salsa8(
            b0 ^ x[16 * LANES + lane], b1 ^ x[17 * LANES + lane], b2 ^ x[18 * LANES + lane], b3 ^ x[19 * LANES + lane],
            b4 ^ x[20 * LANES + lane], b5 ^ x[21 * LANES + lane], b6 ^ x[22 * LANES + lane], b7 ^ x[23 * LANES + lane],
            b8 ^ x[24 * LANES + lane], b9 ^ x[25 * LANES + lane], b10 ^ x[26 * LANES + lane],
            b11 ^ x[27 * LANES + lane], b12 ^ x[28 * LANES + lane], b13 ^ x[29 * LANES + lane],
            b14 ^ x[30 * LANES + lane], b15 ^ x[31 * LANES + lane])
        x[16 * LANES + lane] = c0
        x[17 * LANES + lane] = c1
        x[18 * LANES + lane] = c2
        x[19 * LANES + lane] = c3
        x[20 * LANES + lane] = c4
        x[21 * LANES + lane] = c5
        x[22 * LANES + lane] = c6
        x[23 * LANES + lane] = c7
        x[24 * LANES + lane] = c8
        x[25 * LANES + lane] = c9
        x[26 * LANES + lane] = c10
        x[27 * LANES + lane] = c11
        x[28 * LANES + lane] = c12
        x[29 * LANES + lane] = c13
        x[30 * LANES + lane] = c14
        x[31 * LANES + lane] = c15


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _salsa8(i0, i1, i2, i3, i4, i5, i6, i7, i8, i9, i10, i11, i12, i13, i14, i15):
    """salsa20/8 (RFC 7914 section 3): four double rounds, then the input added back."""
    x0, x1, x2, x3, x4, x5, x6, x7 = i0, i1, i2, i3, i4, i5, i6, i7
    x8, x9, x10, x11, x12, x13, x14, x15 = i8, i9, i10, i11, i12, i13, i14, i15
    # Four double rounds written out: LLVM kept a loop of four, and an inner loop keeps the
    # lane loop around it from being vectorized.
    # double round 1: columns, then rows
    x4 ^= _rotl(u32(x0 + x12), 7)
    x8 ^= _rotl(u32(x4 + x0), 9)
    x12 ^= _rotl(u32(x8 + x4), 13)
    x0 ^= _rotl(u32(x12 + x8), 18)
    x9 ^= _rotl(u32(x5 + x1), 7)
    x13 ^= _rotl(u32(x9 + x5), 9)
    x1 ^= _rotl(u32(x13 + x9), 13)
    x5 ^= _rotl(u32(x1 + x13), 18)
    x14 ^= _rotl(u32(x10 + x6), 7)
    x2 ^= _rotl(u32(x14 + x10), 9)
    x6 ^= _rotl(u32(x2 + x14), 13)
    x10 ^= _rotl(u32(x6 + x2), 18)
    x3 ^= _rotl(u32(x15 + x11), 7)
    x7 ^= _rotl(u32(x3 + x15), 9)
    x11 ^= _rotl(u32(x7 + x3), 13)
    x15 ^= _rotl(u32(x11 + x7), 18)
    x1 ^= _rotl(u32(x0 + x3), 7)
    x2 ^= _rotl(u32(x1 + x0), 9)
    x3 ^= _rotl(u32(x2 + x1), 13)
    x0 ^= _rotl(u32(x3 + x2), 18)
    x6 ^= _rotl(u32(x5 + x4), 7)
    x7 ^= _rotl(u32(x6 + x5), 9)
    x4 ^= _rotl(u32(x7 + x6), 13)
    x5 ^= _rotl(u32(x4 + x7), 18)
    x11 ^= _rotl(u32(x10 + x9), 7)
    x8 ^= _rotl(u32(x11 + x10), 9)
    x9 ^= _rotl(u32(x8 + x11), 13)
    x10 ^= _rotl(u32(x9 + x8), 18)
    x12 ^= _rotl(u32(x15 + x14), 7)
    x13 ^= _rotl(u32(x12 + x15), 9)
    x14 ^= _rotl(u32(x13 + x12), 13)
    x15 ^= _rotl(u32(x14 + x13), 18)
    # double round 2: columns, then rows
    x4 ^= _rotl(u32(x0 + x12), 7)
    x8 ^= _rotl(u32(x4 + x0), 9)
    x12 ^= _rotl(u32(x8 + x4), 13)
    x0 ^= _rotl(u32(x12 + x8), 18)
    x9 ^= _rotl(u32(x5 + x1), 7)
    x13 ^= _rotl(u32(x9 + x5), 9)
    x1 ^= _rotl(u32(x13 + x9), 13)
    x5 ^= _rotl(u32(x1 + x13), 18)
    x14 ^= _rotl(u32(x10 + x6), 7)
    x2 ^= _rotl(u32(x14 + x10), 9)
    x6 ^= _rotl(u32(x2 + x14), 13)
    x10 ^= _rotl(u32(x6 + x2), 18)
    x3 ^= _rotl(u32(x15 + x11), 7)
    x7 ^= _rotl(u32(x3 + x15), 9)
    x11 ^= _rotl(u32(x7 + x3), 13)
    x15 ^= _rotl(u32(x11 + x7), 18)
    x1 ^= _rotl(u32(x0 + x3), 7)
    x2 ^= _rotl(u32(x1 + x0), 9)
    x3 ^= _rotl(u32(x2 + x1), 13)
    x0 ^= _rotl(u32(x3 + x2), 18)
    x6 ^= _rotl(u32(x5 + x4), 7)
    x7 ^= _rotl(u32(x6 + x5), 9)
    x4 ^= _rotl(u32(x7 + x6), 13)
    x5 ^= _rotl(u32(x4 + x7), 18)
    x11 ^= _rotl(u32(x10 + x9), 7)
    x8 ^= _rotl(u32(x11 + x10), 9)
    x9 ^= _rotl(u32(x8 + x11), 13)
    x10 ^= _rotl(u32(x9 + x8), 18)
    x12 ^= _rotl(u32(x15 + x14), 7)
    x13 ^= _rotl(u32(x12 + x15), 9)
    x14 ^= _rotl(u32(x13 + x12), 13)
    x15 ^= _rotl(u32(x14 + x13), 18)
    # double round 3: columns, then rows
    x4 ^= _rotl(u32(x0 + x12), 7)
    x8 ^= _rotl(u32(x4 + x0), 9)
    x12 ^= _rotl(u32(x8 + x4), 13)
    x0 ^= _rotl(u32(x12 + x8), 18)
    x9 ^= _rotl(u32(x5 + x1), 7)
    x13 ^= _rotl(u32(x9 + x5), 9)
    x1 ^= _rotl(u32(x13 + x9), 13)
    x5 ^= _rotl(u32(x1 + x13), 18)
    x14 ^= _rotl(u32(x10 + x6), 7)
    x2 ^= _rotl(u32(x14 + x10), 9)
    x6 ^= _rotl(u32(x2 + x14), 13)
    x10 ^= _rotl(u32(x6 + x2), 18)
    x3 ^= _rotl(u32(x15 + x11), 7)
    x7 ^= _rotl(u32(x3 + x15), 9)
    x11 ^= _rotl(u32(x7 + x3), 13)
    x15 ^= _rotl(u32(x11 + x7), 18)
    x1 ^= _rotl(u32(x0 + x3), 7)
    x2 ^= _rotl(u32(x1 + x0), 9)
    x3 ^= _rotl(u32(x2 + x1), 13)
    x0 ^= _rotl(u32(x3 + x2), 18)
    x6 ^= _rotl(u32(x5 + x4), 7)
    x7 ^= _rotl(u32(x6 + x5), 9)
    x4 ^= _rotl(u32(x7 + x6), 13)
    x5 ^= _rotl(u32(x4 + x7), 18)
    x11 ^= _rotl(u32(x10 + x9), 7)
    x8 ^= _rotl(u32(x11 + x10), 9)
    x9 ^= _rotl(u32(x8 + x11), 13)
    x10 ^= _rotl(u32(x9 + x8), 18)
    x12 ^= _rotl(u32(x15 + x14), 7)
    x13 ^= _rotl(u32(x12 + x15), 9)
    x14 ^= _rotl(u32(x13 + x12), 13)
    x15 ^= _rotl(u32(x14 + x13), 18)
    # double round 4: columns, then rows
    x4 ^= _rotl(u32(x0 + x12), 7)
    x8 ^= _rotl(u32(x4 + x0), 9)
    x12 ^= _rotl(u32(x8 + x4), 13)
    x0 ^= _rotl(u32(x12 + x8), 18)
    x9 ^= _rotl(u32(x5 + x1), 7)
    x13 ^= _rotl(u32(x9 + x5), 9)
    x1 ^= _rotl(u32(x13 + x9), 13)
    x5 ^= _rotl(u32(x1 + x13), 18)
    x14 ^= _rotl(u32(x10 + x6), 7)
    x2 ^= _rotl(u32(x14 + x10), 9)
    x6 ^= _rotl(u32(x2 + x14), 13)
    x10 ^= _rotl(u32(x6 + x2), 18)
    x3 ^= _rotl(u32(x15 + x11), 7)
    x7 ^= _rotl(u32(x3 + x15), 9)
    x11 ^= _rotl(u32(x7 + x3), 13)
    x15 ^= _rotl(u32(x11 + x7), 18)
    x1 ^= _rotl(u32(x0 + x3), 7)
    x2 ^= _rotl(u32(x1 + x0), 9)
    x3 ^= _rotl(u32(x2 + x1), 13)
    x0 ^= _rotl(u32(x3 + x2), 18)
    x6 ^= _rotl(u32(x5 + x4), 7)
    x7 ^= _rotl(u32(x6 + x5), 9)
    x4 ^= _rotl(u32(x7 + x6), 13)
    x5 ^= _rotl(u32(x4 + x7), 18)
    x11 ^= _rotl(u32(x10 + x9), 7)
    x8 ^= _rotl(u32(x11 + x10), 9)
    x9 ^= _rotl(u32(x8 + x11), 13)
    x10 ^= _rotl(u32(x9 + x8), 18)
    x12 ^= _rotl(u32(x15 + x14), 7)
    x13 ^= _rotl(u32(x12 + x15), 9)
    x14 ^= _rotl(u32(x13 + x12), 13)
    x15 ^= _rotl(u32(x14 + x13), 18)
    return (u32(x0 + i0), u32(x1 + i1), u32(x2 + i2), u32(x3 + i3), u32(x4 + i4), u32(x5 + i5),
            u32(x6 + i6), u32(x7 + i7), u32(x8 + i8), u32(x9 + i9), u32(x10 + i10), u32(x11 + i11),
            u32(x12 + i12), u32(x13 + i13), u32(x14 + i14), u32(x15 + i15))


@njit(nogil=True, cache=True, boundscheck=False)
def romix(x, v):
    """scrypt's ROMix with N = 1024 on every lane of `x`; scratchpad `v` (N rows of 32 x
    LANES words, a lane's words LANES apart)."""
    size = 32 * LANES
    for i in range(N):
        v[i * size:(i + 1) * size] = x
        block_mix(x)
    for _ in range(N):
        for lane in range(LANES):
            j = x[16 * LANES + lane] & u32(N - 1)  # Integerify: the last block's first word, mod N
            row = j * size + lane
            for k in range(32):
                x[k * LANES + lane] ^= v[row + k * LANES]
        block_mix(x)


@njit(nogil=True, cache=True, boundscheck=False)
def scrypt_lanes(prefix, nonce0, n, x, v, hashes):
    """scrypt of the headers `prefix` (19 big-endian words) + nonce for nonce0 .. nonce0+n-1
    (n <= LANES), each hash into `hashes[lane]` (8 big-endian words)."""
    lanes = LANES
    header = np.empty(20, dtype=np.uint32)
    header[:19] = prefix
    istates = np.empty((lanes, 8), dtype=np.uint32)
    ostates = np.empty((lanes, 8), dtype=np.uint32)
    block = np.empty(16, dtype=np.uint32)
    w = np.empty(64, dtype=np.uint32)
    tmp = np.empty(8, dtype=np.uint32)
    t = np.empty(8, dtype=np.uint32)
    for lane in range(lanes):
        header[19] = bswap32(u32(nonce0 + min(lane, n - 1)))  # idle lanes repeat the last nonce
        pbkdf2_first(header, x, lane, istates[lane], ostates[lane], block, w, tmp, t)
    romix(x, v)
    for lane in range(n):
        pbkdf2_last(x, lane, istates[lane], ostates[lane], block, w, tmp, hashes[lane])


@njit(nogil=True, cache=True, boundscheck=False)
def search(prefix, target, nonce_start, count, out, x, v):
    """Search [nonce_start, nonce_start+count) lane group by lane group; store up to len(out)
    hits, return the total. `x` and `v` are the caller's scratch (`scratch()`), so a thread
    allocates them once."""
    lanes = LANES
    hashes = np.empty((lanes, 8), dtype=np.uint32)
    total = 0
    pos = 0
    while pos < count:
        n = min(lanes, count - pos)
        scrypt_lanes(prefix, nonce_start + pos, n, x, v, hashes)
        for lane in range(n):
            if meets_target(hashes[lane], target):
                if total < out.shape[0]:
                    out[total] = nonce_start + pos + lane
                total += 1
        pos += n
    return total


def prefix_words(header_prefix: bytes) -> np.ndarray:
    """The 76-byte header prefix as 19 big-endian words."""
    return np.frombuffer(header_prefix, dtype=">u4").astype(np.uint32)


def scratch() -> tuple[np.ndarray, np.ndarray]:
    """One thread's scratch for LANES nonces in flight: the state and the 128 KiB-per-lane pad."""
    return np.zeros(32 * LANES, dtype=np.uint32), np.zeros(N * 32 * LANES, dtype=np.uint32)
