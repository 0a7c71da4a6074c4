"""Scalar SHA-256 for the numba scrypt kernel's PBKDF2-HMAC-SHA256 passes (`cpu_scrypt`): one
compression at a time, on one lane's words. About a twentieth of scrypt's work, so it is kept
plain; the salsa20/8 core is where the lanes are. Installed as `miner.kernels.cpu_sha256_scalar`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from miner.primitives import sha256

u32 = np.uint32

# The round constants and initial state as the rest of the package has them (primitives.sha256),
# as arrays numba reads as constants.
_K = np.array(sha256.K, dtype=np.uint32)
_IV = np.array(sha256.IV, dtype=np.uint32)


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _rotr(x, n):
    return u32(u32(x >> u32(n)) | u32(x << u32(32 - n)))


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def bswap32(x):
    return u32(((x >> u32(24)) & u32(0xFF)) | ((x >> u32(8)) & u32(0xFF00))
               | ((x << u32(8)) & u32(0xFF0000)) | ((x << u32(24)) & u32(0xFF000000)))


@njit(nogil=True, cache=True, boundscheck=False)
def sha256_compress(state, block, w):
    """One SHA-256 compression of `block` (16 big-endian words) into `state` (8 words), in
    place; `w` is 64 words of scratch."""
    for i in range(16):
        w[i] = block[i]
    for i in range(16, 64):
        s0 = _rotr(w[i - 15], 7) ^ _rotr(w[i - 15], 18) ^ u32(w[i - 15] >> u32(3))
        s1 = _rotr(w[i - 2], 17) ^ _rotr(w[i - 2], 19) ^ u32(w[i - 2] >> u32(10))
        w[i] = u32(w[i - 16] + s0 + w[i - 7] + s1)
    a, b, c, d = state[0], state[1], state[2], state[3]
    e, f, g, h = state[4], state[5], state[6], state[7]
    for i in range(64):
        t1 = u32(h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + _K[i] + w[i])
        t2 = u32((_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c)))
        h, g, f, e = g, f, e, u32(d + t1)
        d, c, b, a = c, b, a, u32(t1 + t2)
    state[0] = u32(state[0] + a)
    state[1] = u32(state[1] + b)
    state[2] = u32(state[2] + c)
    state[3] = u32(state[3] + d)
    state[4] = u32(state[4] + e)
    state[5] = u32(state[5] + f)
    state[6] = u32(state[6] + g)
    state[7] = u32(state[7] + h)


@njit(nogil=True, cache=True, boundscheck=False)
def hmac_states(header, istate, ostate, block, w):
    """HMAC-SHA256's inner and outer states for the 80-byte key `header` (20 big-endian
    words): the key is longer than a block, so it is hashed first (RFC 2104)."""
    key = _IV.copy()
    sha256_compress(key, header[:16], w)
    for i in range(4):
        block[i] = header[16 + i]
    block[4] = u32(0x80000000)
    for i in range(5, 15):
        block[i] = 0
    block[15] = u32(640)  # 80 bytes
    sha256_compress(key, block, w)
    for i in range(8):
        block[i] = key[i] ^ u32(0x36363636)
    for i in range(8, 16):
        block[i] = u32(0x36363636)
    istate[:] = _IV
    sha256_compress(istate, block, w)
    for i in range(16):
        block[i] = block[i] ^ u32(0x36363636 ^ 0x5C5C5C5C)
    ostate[:] = _IV
    sha256_compress(ostate, block, w)


@njit(nogil=True, cache=True, boundscheck=False)
def hmac_outer(ostate, inner, out, block, w):
    """HMAC's outer hash over a 32-byte inner digest, into `out` (8 words)."""
    out[:] = ostate
    for i in range(8):
        block[i] = inner[i]
    block[8] = u32(0x80000000)
    for i in range(9, 15):
        block[i] = 0
    block[15] = u32(768)  # 64 + 32 bytes
    sha256_compress(out, block, w)
