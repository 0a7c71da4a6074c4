"""Difficulty retarget rules: Bitcoin's windowed rule and the per-block ASERT rule (aserti3-2d).

Both are pure integer functions of the chain's history. A rule sees the chain through two
sequences indexed by height, `times` and `bits`, holding at least every block below the height
whose bits it computes; that keeps them usable from the SQLite store, from an in-memory verify
pass and from a simulated clock alike.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from miner.primitives.compact import bits_to_target, decode_compact, target_to_bits


class RetargetRule(Protocol):
    name: str

    def next_bits(self, height: int, times: Sequence[int], bits: Sequence[int]) -> int:
        """The `nBits` a block at `height` (>= 1) must carry."""


@dataclass(frozen=True)
class FixedRule:
    """No retargeting: every block carries the parent's bits (Bitcoin Core's regtest,
    `fPowNoRetargeting`, where every block is at the proof-of-work limit)."""

    bits: int
    name: str = "fixed"

    def next_bits(self, height: int, times: Sequence[int], bits: Sequence[int]) -> int:
        return bits[height - 1]


@dataclass(frozen=True)
class WindowedRule:
    """Bitcoin's rule: every `window` blocks, scale the target by actual/expected window time.

    The actual time is clamped to [expected/4, expected*4] and the result capped at the pow limit.
    With `off_by_one` (Bitcoin's own behaviour, kept for the mainnet preset) the window measured
    spans `window - 1` block intervals, from the first block of the window to the last; without
    it, from the last block of the previous window, so `window` intervals are measured.
    """

    window: int
    spacing: int
    pow_limit: int
    off_by_one: bool = True
    name: str = "windowed"

    def next_bits(self, height: int, times: Sequence[int], bits: Sequence[int]) -> int:
        parent = height - 1
        if height % self.window != 0:
            return bits[parent]
        first = parent - (self.window - 1) if self.off_by_one else max(parent - self.window, 0)
        return self.retarget(bits[parent], times[parent] - times[first])

    def retarget(self, parent_bits: int, actual_timespan: int) -> int:
        """Core's CalculateNextWorkRequired, given the measured window time."""
        expected = self.window * self.spacing
        actual = min(max(actual_timespan, expected // 4), expected * 4)
        # Core decodes the parent's bits without the validity checks (it was already accepted).
        target = decode_compact(parent_bits)[0] * actual // expected
        return target_to_bits(min(target, self.pow_limit))


# aserti3-2d constants (Bitcoin Cash specification, 2020-11-15 upgrade).
ASERT_RADIX = 1 << 16
_ASERT_C1 = 195_766_423_245_049
_ASERT_C2 = 971_821_376
_ASERT_C3 = 5_127


def _div_trunc(a: int, b: int) -> int:
    """Integer division rounding toward zero, as C++'s `/` in the consensus code does."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@dataclass(frozen=True)
class AsertRule:
    """Per-block exponential rule: the target doubles for every `halflife` seconds a block is
    behind its absolute schedule, and halves for every `halflife` seconds it is ahead.

    The anchor is the genesis block (height 0, its bits); its parent's time is taken as one
    spacing before genesis, so a chain exactly on schedule keeps the genesis difficulty.
    """

    spacing: int
    halflife: int
    pow_limit: int
    anchor_bits: int
    anchor_parent_time: int
    anchor_height: int = 0
    name: str = "asert"

    def next_bits(self, height: int, times: Sequence[int], bits: Sequence[int]) -> int:
        parent = height - 1
        return self.bits_after(parent, times[parent])

    def bits_after(self, parent_height: int, parent_time: int) -> int:
        time_delta = parent_time - self.anchor_parent_time
        height_delta = parent_height - self.anchor_height
        exponent = _div_trunc((time_delta - self.spacing * (height_delta + 1)) * ASERT_RADIX,
                              self.halflife)
        return _asert_bits(self.anchor_bits, exponent, self.pow_limit)


@functools.lru_cache(maxsize=4096)
def _asert_bits(anchor_bits: int, exponent: int, pow_limit: int) -> int:
    """The anchor's target scaled by 2^(exponent / 2^16), as bits: a pure function, kept for the
    exponents seen last, since a chain near its schedule repeats few of them (a verify pass asks
    once a block)."""
    return _clamped_bits(scale_target(bits_to_target(anchor_bits), exponent), pow_limit)


def scale_target(target: int, exponent: int) -> int:
    """target * 2^(exponent / 2^16), with aserti3-2d's integer cubic for the fractional part."""
    shifts = exponent >> 16  # arithmetic shift: floor(exponent / 2^16)
    frac = exponent - shifts * ASERT_RADIX  # 0 <= frac < 2^16
    factor = ((_ASERT_C1 * frac + _ASERT_C2 * frac * frac + _ASERT_C3 * frac ** 3 + (1 << 47))
              >> 48) + ASERT_RADIX
    target = target * factor
    target = target >> -shifts if shifts < 0 else target << shifts
    return target >> 16


def _clamped_bits(target: int, pow_limit: int) -> int:
    if target == 0:
        return target_to_bits(1)
    if target > pow_limit:
        return target_to_bits(pow_limit)
    return target_to_bits(target)


@dataclass(frozen=True)
class CappedAsertRule:
    """ASERT applied block by block, with each solve time capped: the parent's target scaled by
    2^((solvetime - spacing) / halflife), the solve time (parent's time minus grandparent's)
    clamped to [0, spacing + halflife].

    Without the cap this equals anchored ASERT up to rounding (the factors multiply into the
    same exponent). The cap is for chains mined on and off: after a pause of any length the
    next target is at most twice as easy, where anchored ASERT would count the whole pause as
    blocks behind schedule (25 minutes at a 12 s halflife: 2^155, the easiest target there is).
    A pure function of the headers, like every rule here, so `verify` checks it.
    """

    spacing: int
    halflife: int
    pow_limit: int
    genesis_parent_time: int  # genesis's solve time counts as one spacing: no change at height 1
    name: str = "asert-capped"

    @property
    def max_solvetime(self) -> int:
        return self.spacing + self.halflife

    def next_bits(self, height: int, times: Sequence[int], bits: Sequence[int]) -> int:
        parent = height - 1
        grandparent_time = times[parent - 1] if parent >= 1 else self.genesis_parent_time
        solvetime = min(max(times[parent] - grandparent_time, 0), self.max_solvetime)
        exponent = _div_trunc((solvetime - self.spacing) * ASERT_RADIX, self.halflife)
        # The parent's bits were accepted already: decode without the validity checks, as Core.
        return _clamped_bits(scale_target(decode_compact(bits[parent])[0], exponent), self.pow_limit)
