"""scrypt's BlockMix (r = 1) and salsa20/8 (RFC 7914, sections 3 and 4) for the numba CPU
kernel (`cpu_scrypt`), one lane of a lane group at a time: written out as straight-line code so
that, inlined into a loop over the lanes with the row stride a constant, LLVM turns each step
into one vector instruction for all the lanes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

u32 = np.uint32


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _rotl(x, n):
    return u32(u32(x << u32(n)) | u32(x >> u32(32 - n)))


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def mix_lane(x, lane, W):
    """BlockMix (r = 1) of lane `lane` of `x` (32 rows of `W` words), in place: x0 ^= x1,
    x0 = salsa20/8(x0); x1 ^= x0, x1 = salsa20/8(x1). Inlined into a loop over the lanes with
    `W` a constant there, so the loop's body is straight-line code at fixed strides."""
    b0 = x[0 * W + lane] ^ x[16 * W + lane]
    b1 = x[1 * W + lane] ^ x[17 * W + lane]
    b2 = x[2 * W + lane] ^ x[18 * W + lane]
    b3 = x[3 * W + lane] ^ x[19 * W + lane]
    b4 = x[4 * W + lane] ^ x[20 * W + lane]
    b5 = x[5 * W + lane] ^ x[21 * W + lane]
    b6 = x[6 * W + lane] ^ x[22 * W + lane]
    b7 = x[7 * W + lane] ^ x[23 * W + lane]
    b8 = x[8 * W + lane] ^ x[24 * W + lane]
    b9 = x[9 * W + lane] ^ x[25 * W + lane]
    b10 = x[10 * W + lane] ^ x[26 * W + lane]
    b11 = x[11 * W + lane] ^ x[27 * W + lane]
    b12 = x[12 * W + lane] ^ x[28 * W + lane]
    b13 = x[13 * W + lane] ^ x[29 * W + lane]
    b14 = x[14 * W + lane] ^ x[30 * W + lane]
    b15 = x[15 * W + lane] ^ x[31 * W + lane]
    (b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15) = _salsa8(
        b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15)
    x[0 * W + lane] = b0
    x[1 * W + lane] = b1
    x[2 * W + lane] = b2
    x[3 * W + lane] = b3
    x[4 * W + lane] = b4
    x[5 * W + lane] = b5
    x[6 * W + lane] = b6
    x[7 * W + lane] = b7
    x[8 * W + lane] = b8
    x[9 * W + lane] = b9
    x[10 * W + lane] = b10
    x[11 * W + lane] = b11
    x[12 * W + lane] = b12
    x[13 * W + lane] = b13
    x[14 * W + lane] = b14
    x[15 * W + lane] = b15
    (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15) = _salsa8(
        b0 ^ x[16 * W + lane], b1 ^ x[17 * W + lane], b2 ^ x[18 * W + lane], b3 ^ x[19 * W + lane],
        b4 ^ x[20 * W + lane], b5 ^ x[21 * W + lane], b6 ^ x[22 * W + lane], b7 ^ x[23 * W + lane],
        b8 ^ x[24 * W + lane], b9 ^ x[25 * W + lane], b10 ^ x[26 * W + lane],
        b11 ^ x[27 * W + lane], b12 ^ x[28 * W + lane], b13 ^ x[29 * W + lane],
        b14 ^ x[30 * W + lane], b15 ^ x[31 * W + lane])
    x[16 * W + lane] = c0
    x[17 * W + lane] = c1
    x[18 * W + lane] = c2
    x[19 * W + lane] = c3
    x[20 * W + lane] = c4
    x[21 * W + lane] = c5
    x[22 * W + lane] = c6
    x[23 * W + lane] = c7
    x[24 * W + lane] = c8
    x[25 * W + lane] = c9
    x[26 * W + lane] = c10
    x[27 * W + lane] = c11
    x[28 * W + lane] = c12
    x[29 * W + lane] = c13
    x[30 * W + lane] = c14
    x[31 * W + lane] = c15


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
