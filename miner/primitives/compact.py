"""Compact `nBits` targets exactly as Bitcoin Core encodes them, difficulty and work.

`decode_compact` is Core's `arith_uint256::SetCompact` flag by flag and `target_to_bits` its
`GetCompact`; whether a header's hash meets its bits under a chain's limit is a consensus rule
(`miner.consensus.pow`).
"""

from __future__ import annotations

import functools

from miner.errors import InvalidBits

MAX_TARGET = (1 << 256) - 1
DIFF1_BITS = 0x1D00FFFF
DIFF1_TARGET = 0xFFFF << 208  # the target of difficulty 1 (bits 0x1d00ffff)
# Bitcoin Core's consensus.powLimit for mainnet (00000000ffff...ff) and regtest (7fffff00...00).
MAINNET_POW_LIMIT = (1 << 224) - 1
REGTEST_POW_LIMIT = 0x7FFFFF << 232


def decode_compact(bits: int) -> tuple[int, bool, bool]:
    """Bitcoin Core's `arith_uint256::SetCompact`: (value, negative, overflow).

    The value is what Core computes before it checks the flags; `bits_to_target` applies the
    checks. Kept separate so tests can compare against Core's own model flag by flag.
    """
    if not 0 <= bits <= 0xFFFFFFFF:
        raise InvalidBits(f"bits must be a 32-bit unsigned value, got {bits}")
    size = bits >> 24
    word = bits & 0x007FFFFF
    if size <= 3:
        # Core shifts the mantissa word itself here, before the flags below read it: a sign bit
        # over a mantissa shifted down to zero (0x01803456) is not negative, just zero.
        word >>= 8 * (3 - size)
        value = word
    else:
        value = word << (8 * (size - 3))
    negative = word != 0 and (bits & 0x00800000) != 0
    overflow = word != 0 and (size > 34 or (word > 0xFF and size > 33) or (word > 0xFFFF and size > 32))
    # Core's arith_uint256 is 256 bits wide: a shifted value that escapes is truncated, but every
    # such case is flagged as overflow above, so only flagged values are ever masked here.
    return value & MAX_TARGET, negative, overflow


@functools.lru_cache(maxsize=1024)  # a chain has few distinct bits; verify asks for each block's
def bits_to_target(bits: int, pow_limit: int = MAX_TARGET) -> int:
    """The 256-bit target of `bits`, rejecting every encoding Core's CheckProofOfWork rejects."""
    value, negative, overflow = decode_compact(bits)
    if negative:
        raise InvalidBits(f"bits 0x{bits:08x} encode a negative target")
    if overflow:
        raise InvalidBits(f"bits 0x{bits:08x} overflow 256 bits")
    if value == 0:
        raise InvalidBits(f"bits 0x{bits:08x} encode a zero target")
    if value > pow_limit:
        raise InvalidBits(f"bits 0x{bits:08x} encode a target above the proof-of-work limit")
    return value


def target_to_bits(target: int) -> int:
    """Bitcoin Core's `arith_uint256::GetCompact` for a non-negative target."""
    if not 0 <= target <= MAX_TARGET:
        raise InvalidBits(f"target out of range: {target}")
    size = (target.bit_length() + 7) // 8
    if size <= 3:
        compact = (target << (8 * (3 - size))) & 0xFFFFFFFF
    else:
        compact = (target >> (8 * (size - 3))) & 0xFFFFFFFF
    # The mantissa's top bit would read as a sign: move one byte into the exponent instead.
    if compact & 0x00800000:
        compact >>= 8
        size += 1
    return compact | (size << 24)


def parse_bits(text: str) -> int:
    """Read `nBits` as written everywhere in Bitcoin: hex, with or without `0x` (`1d00ffff`)."""
    t = text.strip().lower()
    t = t.removeprefix("0x")
    if not t or len(t) > 8 or any(c not in "0123456789abcdef" for c in t):
        raise InvalidBits(f"bits must be up to 8 hex digits, got {text!r}")
    return int(t, 16)


def difficulty(target: int) -> float:
    """Difficulty relative to the difficulty-1 target (bits 0x1d00ffff), as Bitcoin reports it."""
    if target <= 0:
        raise InvalidBits("difficulty of a zero target is undefined")
    return DIFF1_TARGET / target


def work(target: int) -> int:
    """Expected number of hashes to meet `target` (Core's GetBlockProof): 2^256 / (target+1)."""
    return (1 << 256) // (target + 1)
