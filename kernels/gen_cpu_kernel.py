"""Generator of `kernels/cpu_sha256d.py`, the numba SHA-256d nonce-search kernel.

Why generate: LLVM vectorizes the nonce loop across SIMD lanes (one nonce per lane) only when the
loop body is the whole double hash as straight-line code with every value 32 bits wide. Writing
128 rounds by hand is error-prone; this generator writes them, and folds on the way:

* values that do not depend on the nonce (midstate, tail words, the first three rounds of the
  second block, schedule words built only from them) are computed once, before the loop;
* literal values (padding words, zero words, the IV of the second hash) are folded into
  constants at generation time, so zero schedule terms vanish and `K[t] + W[t]` is one literal;
* only the last state word of the second hash is computed in the hot loop; LLVM then deletes
  the rounds that do not feed it (rounds 61-63 and the `a` half of 57-60).

Numba widens uint32 arithmetic to 64 bits; every sub-expression is wrapped in `u32(...)` so LLVM
sees 32-bit rotates and 3-input logic (vprold, vpternlogd on AVX-512).

Run `python -m miner.kernels.gen_cpu_kernel` after editing; a test checks the checked-in file is current.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from miner.primitives.sha256 import IV, K

MASK = 0xFFFFFFFF
OUT = Path(__file__).with_name("cpu_sha256d.py")


@dataclass(frozen=True)
class Val:
    """A 32-bit value: a literal, a loop-invariant local ("pre") or a per-nonce local ("loop")."""

    kind: str  # "lit", "pre" or "loop"
    text: str
    lit: int = 0


def lit(x: int) -> Val:
    return Val("lit", f"0x{x & MASK:08x}", x & MASK)


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & MASK


class Emitter:
    """Emits SSA assignments into the pre-loop or loop section depending on what they read."""

    def __init__(self, hoist: bool = True):
        self.pre: list[str] = []
        self.loop: list[str] = []
        self.hoist = hoist
        self.n = 0

    def assign(self, expr: str, parts: list[Val], hint: str = "t") -> Val:
        kind = "loop" if any(p.kind == "loop" for p in parts) or not self.hoist else "pre"
        self.n += 1
        name = f"{hint.rstrip('_')}_{self.n}"
        (self.loop if kind == "loop" else self.pre).append(f"{name} = u32({expr})")
        return Val(kind, name)

    # ---- primitives with literal folding

    def add(self, *vals: Val, hint: str = "s") -> Val:
        const = sum(v.lit for v in vals if v.kind == "lit") & MASK
        rest = [v for v in vals if v.kind != "lit"]
        if not rest:
            return lit(const)
        terms = [v.text for v in rest] + ([f"u32(0x{const:08x})"] if const else [])
        if len(terms) == 1:
            return rest[0]
        return self.assign(" + ".join(terms), rest, hint)

    @staticmethod
    def _rot(x: str, n: int) -> str:
        return f"u32(u32({x} >> u32({n})) | u32({x} << u32({32 - n})))"

    def big_sigma0(self, a: Val) -> Val:
        if a.kind == "lit":
            return lit(_rotr(a.lit, 2) ^ _rotr(a.lit, 13) ^ _rotr(a.lit, 22))
        x = a.text
        return self.assign(f"{self._rot(x, 2)} ^ {self._rot(x, 13)} ^ {self._rot(x, 22)}", [a], "S0_")

    def big_sigma1(self, e: Val) -> Val:
        if e.kind == "lit":
            return lit(_rotr(e.lit, 6) ^ _rotr(e.lit, 11) ^ _rotr(e.lit, 25))
        x = e.text
        return self.assign(f"{self._rot(x, 6)} ^ {self._rot(x, 11)} ^ {self._rot(x, 25)}", [e], "S1_")

    def small_sigma0(self, w: Val) -> Val:
        if w.kind == "lit":
            return lit(_rotr(w.lit, 7) ^ _rotr(w.lit, 18) ^ (w.lit >> 3))
        x = w.text
        return self.assign(f"{self._rot(x, 7)} ^ {self._rot(x, 18)} ^ u32({x} >> u32(3))", [w], "s0_")

    def small_sigma1(self, w: Val) -> Val:
        if w.kind == "lit":
            return lit(_rotr(w.lit, 17) ^ _rotr(w.lit, 19) ^ (w.lit >> 10))
        x = w.text
        return self.assign(f"{self._rot(x, 17)} ^ {self._rot(x, 19)} ^ u32({x} >> u32(10))", [w], "s1_")

    def ch(self, e: Val, f: Val, g: Val) -> Val:
        # g ^ (e & (f ^ g)) == (e & f) ^ (~e & g), without a NOT that numba would widen.
        if e.kind == f.kind == g.kind == "lit":
            return lit(g.lit ^ (e.lit & (f.lit ^ g.lit)))
        return self.assign(f"{g.text} ^ u32({e.text} & u32({f.text} ^ {g.text}))", [e, f, g], "ch")

    def maj(self, a: Val, b: Val, c: Val) -> Val:
        # (a & b) | (c & (a | b)): majority; one spelling LLVM turns into a single vpternlogd.
        if a.kind == b.kind == c.kind == "lit":
            return lit((a.lit & b.lit) | (c.lit & (a.lit | b.lit)))
        return self.assign(f"u32({a.text} & {b.text}) | u32({c.text} & u32({a.text} | {b.text}))",
                           [a, b, c], "mj")


def schedule(em: Emitter, w: list[Val], upto: int) -> list[Val]:
    """Extend the message schedule to `upto` words, skipping terms that are literal zero."""
    w = list(w)
    for t in range(16, upto):
        terms = [em.small_sigma1(w[t - 2]), w[t - 7], em.small_sigma0(w[t - 15]), w[t - 16]]
        w.append(em.add(*terms, hint="w"))
    return w


def compress_rounds(em: Emitter, state: list[Val], w: list[Val], start: int, stop: int) -> list[Val]:
    a, b, c, d, e, f, g, h = state
    for t in range(start, stop):
        t1 = em.add(h, em.big_sigma1(e), em.ch(e, f, g), lit(K[t]), w[t], hint="T")
        t2 = em.add(em.big_sigma0(a), em.maj(a, b, c), hint="U")
        a, b, c, d, e, f, g, h = em.add(t1, t2, hint="a"), a, b, c, em.add(d, t1, hint="e"), e, f, g
    return [a, b, c, d, e, f, g, h]


def double_hash(em: Emitter, last_word_only: bool) -> list[Val]:
    """Emit sha256d of the header's second block; returns the output words needed."""
    mid = [Val("pre", f"m{i}") for i in range(8)]
    nonce_word = Val("loop", "wn")
    # Second block of the 80-byte header: tail words, nonce, padding (0x80 then zeros, length 640).
    w1 = [Val("pre", "w0"), Val("pre", "w1"), Val("pre", "w2"), nonce_word, lit(0x80000000)] + \
         [lit(0)] * 10 + [lit(640)]
    w1 = schedule(em, w1, 64)
    st = compress_rounds(em, mid, w1, 0, 64)
    hash1 = [em.add(m, s, hint="h") for m, s in zip(mid, st)]
    # Second hash: one block, the 32-byte first hash then padding (length 256), from the IV.
    w2 = hash1 + [lit(0x80000000)] + [lit(0)] * 6 + [lit(256)]
    iv = [lit(x) for x in IV]
    if last_word_only:
        # H7 = IV7 + (value of `e` made in round 60): it moves e -> f -> g -> h in rounds 61-63.
        w2 = schedule(em, w2, 61)
        st = compress_rounds(em, iv, w2, 0, 61)
        return [em.add(lit(IV[7]), st[4], hint="H")]
    w2 = schedule(em, w2, 64)
    st = compress_rounds(em, iv, w2, 0, 64)
    return [em.add(lit(v), s, hint="H") for v, s in zip(IV, st)]


def bswap(x: str) -> str:
    return (f"u32(u32({x} >> u32(24)) | u32(u32({x} >> u32(8)) & u32(0xff00)) | "
            f"u32(u32({x} << u32(8)) & u32(0xff0000)) | u32({x} << u32(24)))")


def _suffixed(lines: list[str], names: set[str], suffix: str) -> list[str]:
    """Rename the per-nonce locals of `lines` so two copies can share one loop body."""
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b")
    return [pattern.sub(lambda m: m.group(1) + suffix, line) for line in lines]


def generate() -> str:
    fast = Emitter(hoist=True)
    (h7,) = double_hash(fast, last_word_only=True)
    exact = Emitter(hoist=False)
    words = double_hash(exact, last_word_only=False)
    ind = "        "
    loop_names = {line.split(" = ")[0] for line in fast.loop} | {"wn", "top", "nonce"}
    body = [f"wn = {bswap('nonce')}", *fast.loop, f"top = {bswap(h7.text)}"]
    # Two independent nonces per lane and iteration, statement by statement: one SHA-256 chain
    # is a long serial dependency, and the out-of-order window cannot reach the next loop
    # iteration's independent work; interleaving two chains hides that latency.
    pair = [x for ab in zip(_suffixed(body, loop_names, "_a"), _suffixed(body, loop_names, "_b"))
            for x in ab]
    # Both functions read the job the same way: midstate, then the three tail words.
    job_loads = [*[f"    m{i} = job[{i}]" for i in range(8)], "    w0 = job[8]", "    w1 = job[9]",
                 "    w2 = job[10]"]
    prologue = [*job_loads, *["    " + s for s in fast.pre]]
    lines = [
        '"""GENERATED by kernels/gen_cpu_kernel.py: do not edit by hand; edit the generator.',
        "",
        "The SHA-256d nonce-search rounds for the numba CPU backend (see `miner.kernels.cpu`).",
        '"""',
        "",
        "import numpy as np",
        "from numba import njit",
        "",
        "from .cpu_width import full_width",
        "",
        "u32 = np.uint32",
        "",
        "",
        "@njit(nogil=True, cache=True, boundscheck=False)",
        "def count_candidates(job, nonce0, n, t7):",
        '    """Count nonces in [nonce0, nonce0+2n) whose hash has top limb <= t7 (vectorized loop).',
        "",
        "    Iteration i hashes nonces nonce0+i and nonce0+n+i. Only 32-bit values are carried",
        "    across iterations, so LLVM can give each of them a full zmm register of 16 lanes;",
        "    `full_width()` makes it do so even where the CPU's tuning prefers 256-bit vectors.",
        '    """',
        "    full_width()",
        *prologue,
        "    nonce_a = u32(nonce0)",
        "    nonce_b = u32(nonce0 + u32(n))",
        "    cnt = u32(0)",
        "    for _ in range(n):",
        *[ind + s for s in pair],
        f"{ind}cnt = u32(cnt + u32(top_a <= t7) + u32(top_b <= t7))",
        f"{ind}nonce_a = u32(nonce_a + u32(1))",
        f"{ind}nonce_b = u32(nonce_b + u32(1))",
        "    return cnt",
        "",
        "",
        "@njit(nogil=True, cache=True, boundscheck=False)",
        "def hash_words(job, nonce, out):",
        '    """All eight words of sha256d (big-endian state words) for one nonce: the exact path."""',
        *job_loads,
        f"    wn = {bswap('u32(nonce)')}",
        *["    " + s for s in exact.loop],
        *[f"    out[{i}] = {w.text}" for i, w in enumerate(words)],
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    OUT.write_text(generate())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
