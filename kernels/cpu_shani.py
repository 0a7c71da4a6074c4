"""The SHA-extensions kernel: sha256d with `sha256rnds2`, `sha256msg1` and `sha256msg2`.

Most desktop x86 CPUs have no AVX-512 but do have the SHA extensions (Intel since Goldmont and
Ice Lake client, every AMD Zen). There one `sha256rnds2` does two rounds for one nonce, which beats
eight AVX2 lanes doing a round each in many more instructions. numba has no vector type, so the
double hash is written here as LLVM IR through numba's `@intrinsic`: the state lives in two
<4 x i32> registers, ABEF and CDGH, as the instructions want it.

Two nonces go through the rounds side by side, instruction by instruction: `sha256rnds2` has a
latency of several cycles and each round pair depends on the previous one, so a second
independent chain fills the gaps.

The caller must only compile this where the CPU has the SHA extensions: LLVM cannot lower the
intrinsics otherwise and aborts the process. `miner.kernels.cpu_select` checks first.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from miner.primitives.sha256 import IV, K

u32 = np.uint32

# Nonces hashed side by side per loop iteration. One core of a Zen 4 EPYC, 15 interleaved runs,
# median (best) MH/s: 2 lanes 24.7 (27.1), 3 lanes 26.8 (33.9), 4 lanes 29.1 (34.4), 5 lanes
# 22.9 (33.2), 6 lanes 22.6 (31.8). Past four, the 16 xmm registers that the legacy-encoded SHA
# instructions can name run out and LLVM spills the states to the stack.
LANES = 4

_I32 = ir.IntType(32)
_V4 = ir.VectorType(_I32, 4)


class _ShaNi:
    """Emits SHA-256 compressions for several independent messages in lockstep."""

    def __init__(self, builder: ir.IRBuilder):
        self.b = builder
        module = builder.module
        self._rnds2 = cgutils.get_or_insert_function(
            module, ir.FunctionType(_V4, [_V4, _V4, _V4]), "llvm.x86.sha256rnds2")
        self._msg1 = cgutils.get_or_insert_function(
            module, ir.FunctionType(_V4, [_V4, _V4]), "llvm.x86.sha256msg1")
        self._msg2 = cgutils.get_or_insert_function(
            module, ir.FunctionType(_V4, [_V4, _V4]), "llvm.x86.sha256msg2")

    # ---- building vectors

    @staticmethod
    def const(words) -> ir.Constant:
        return ir.Constant(_V4, [ir.Constant(_I32, w & 0xFFFFFFFF) for w in words])

    def vec(self, words) -> ir.Value:
        """<4 x i32> from four i32 values or Python ints; lane 0 is the first."""
        out = self.const([w if isinstance(w, int) else 0 for w in words])
        for i, w in enumerate(words):
            if not isinstance(w, int):
                out = self.b.insert_element(out, w, ir.Constant(_I32, i))
        return out

    def upper_half(self, v):
        """Lanes 2 and 3 moved to 0 and 1, where `sha256rnds2` reads its two W+K values."""
        return self.pick(v, ir.Constant(_V4, None), 2, 3, 2, 3)

    def pick(self, x, y, *idx):
        """Lanes of the 8-lane concatenation x ++ y."""
        return self.b.shuffle_vector(x, y, ir.Constant(_V4, [ir.Constant(_I32, i) for i in idx]))

    # ---- one compression for every message in `msgs`

    def compress(self, abef: list, cdgh: list, msgs: list[list], rounds: int = 64, first=None):
        """Run `rounds` (a multiple of 2) rounds; msgs[j] is message j's 16 words as four vectors.

        Returns the (ABEF, CDGH) working state of each message, not yet added to the input state.
        ABEF holds lanes (F, E, B, A) and CDGH (H, G, D, C), the layout `sha256rnds2` uses.
        `first`, when given, is W+K for rounds 0 and 1 in lanes 0 and 1: a vector that does not
        depend on the nonce lets LLVM hoist that first `sha256rnds2` out of the nonce loop.
        """
        b = self.b
        abef, cdgh = list(abef), list(cdgh)
        w = [list(m) for m in msgs]
        for quad in range(-(-rounds // 4)):
            kq = self.const(K[4 * quad:4 * quad + 4])
            if quad >= 4:  # the next four schedule words, from the previous sixteen
                for m in w:
                    x = b.call(self._msg1, [m[quad - 4], m[quad - 3]])
                    x = b.add(x, self.pick(m[quad - 2], m[quad - 1], 1, 2, 3, 4))  # W[t-7 .. t-4]
                    m.append(b.call(self._msg2, [x, m[quad - 1]]))
            wk = [b.add(m[quad], kq) for m in w]
            lo = [first] * len(w) if quad == 0 and first is not None else wk
            for j in range(len(w)):  # rounds 4q, 4q+1: the old ABEF becomes CDGH
                abef[j], cdgh[j] = b.call(self._rnds2, [cdgh[j], abef[j], lo[j]]), abef[j]
            if 4 * quad + 2 >= rounds:
                break
            for j in range(len(w)):  # rounds 4q+2, 4q+3 with the upper half of W+K
                hi = self.upper_half(wk[j])
                abef[j], cdgh[j] = b.call(self._rnds2, [cdgh[j], abef[j], hi]), abef[j]
        return abef, cdgh


def _build_tops(builder: ir.IRBuilder, mid, tail, nonces) -> list:
    """IR for the last state word of sha256d of each nonce's header (not byte-swapped).

    `mid` are the eight midstate words, `tail` the header's words 16-18, `nonces` the nonce
    words already in message order. Work that does not depend on the nonce (the midstate's
    vectors, constant schedule words) is loop-invariant and LLVM hoists it out of the caller's loop.
    """
    sha = _ShaNi(builder)
    b = builder
    abef0 = sha.vec([mid[5], mid[4], mid[1], mid[0]])
    cdgh0 = sha.vec([mid[7], mid[6], mid[3], mid[2]])
    pad1 = [sha.const([0x80000000, 0, 0, 0]), sha.const([0, 0, 0, 0]), sha.const([0, 0, 0, 640])]
    msgs = [[sha.vec([tail[0], tail[1], tail[2], n]), *pad1] for n in nonces]
    n = len(nonces)
    # Rounds 0 and 1 read header words 16 and 17 only: the same for every nonce.
    first = b.add(sha.vec([tail[0], tail[1], 0, 0]), sha.const([K[0], K[1], 0, 0]))
    abef, cdgh = sha.compress([abef0] * n, [cdgh0] * n, msgs, first=first)
    abef = [b.add(x, abef0) for x in abef]
    cdgh = [b.add(x, cdgh0) for x in cdgh]
    # The second hash's message is the first hash (A..H) then padding for 256 bits.
    pad2 = [sha.const([0x80000000, 0, 0, 0]), sha.const([0, 0, 0, 256])]
    msgs = [[sha.pick(x, y, 3, 2, 7, 6), sha.pick(x, y, 1, 0, 5, 4), *pad2] for x, y in zip(abef, cdgh)]
    iv_abef = sha.const([IV[5], IV[4], IV[1], IV[0]])
    iv_cdgh = sha.const([IV[7], IV[6], IV[3], IV[2]])
    # Only H of the result is needed. After round 63, H is the F made by the pair of rounds 60-61
    # (rounds 62-63 shift it from F to H), so the last `sha256rnds2` is left out.
    abef, _ = sha.compress([iv_abef] * n, [iv_cdgh] * n, msgs, rounds=62)
    return [b.add(b.extract_element(x, ir.Constant(_I32, 0)), ir.Constant(_I32, IV[7])) for x in abef]


def _bswap_ir(builder: ir.IRBuilder, x):
    bswap = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_I32]), "llvm.bswap.i32")
    return builder.call(bswap, [x])


def _counter(lanes: int):
    """An intrinsic (mid, tail, nonce, t7) -> how many of nonce .. nonce+lanes-1 have a top
    limb <= t7: `lanes` double hashes in lockstep, their comparisons and the sum, in one piece of IR."""

    @intrinsic
    def count_block(typingctx, mid, tail, nonce, t7):
        sig = types.uint32(mid, tail, nonce, t7)

        def codegen(context, builder, signature, args):
            m, t = (cgutils.unpack_tuple(builder, a) for a in args[:2])
            nonce_v, limit = args[2], args[3]
            words = [_bswap_ir(builder, builder.add(nonce_v, ir.Constant(_I32, i))) for i in range(lanes)]
            total = ir.Constant(_I32, 0)
            for top in _build_tops(builder, m, t, words):
                hit = builder.icmp_unsigned("<=", _bswap_ir(builder, top), limit)
                total = builder.add(total, builder.zext(hit, _I32))
            return total

        return sig, codegen

    return count_block


_count_wide = _counter(LANES)
_count_one = _counter(1)


@njit(nogil=True, cache=True, boundscheck=False)
def count_candidates(job, nonce0, n, t7):
    """Count nonces in [nonce0, nonce0+2n) whose hash has top limb <= t7 (the SIMD kernel's contract)."""
    mid = (u32(job[0]), u32(job[1]), u32(job[2]), u32(job[3]),
           u32(job[4]), u32(job[5]), u32(job[6]), u32(job[7]))
    tail = (u32(job[8]), u32(job[9]), u32(job[10]))
    limit = u32(t7)
    cnt = u32(0)
    nonce = u32(nonce0)
    todo = 2 * n
    for _ in range(todo // LANES):
        cnt = u32(cnt + _count_wide(mid, tail, nonce, limit))
        nonce = u32(nonce + u32(LANES))
    for _ in range(todo % LANES):
        cnt = u32(cnt + _count_one(mid, tail, nonce, limit))
        nonce = u32(nonce + u32(1))
    return cnt
