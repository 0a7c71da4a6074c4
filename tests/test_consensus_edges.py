"""Consensus arithmetic at its edges, against values the implementation did not produce.

- ASERT: the aserti3-2d conformance vectors (tests/fixtures/asert-aserti3-2d-vectors.txt, from
  the C++ implementation that defines the rule), including blocks ahead of schedule, where the
  exponent is negative with a remainder and truncation toward zero (C++'s `/`) and flooring
  give different targets, and an anchor with a full 3-byte mantissa.
- Compact nBits: Bitcoin Core's `arith_uint256_tests` values for SetCompact, and each size
  boundary of its overflow rule (sizes 32, 33, 34, 35) and sign flag.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from miner.consensus.retarget import AsertRule
from miner.errors import InvalidInput
from miner.primitives.compact import MAINNET_POW_LIMIT, bits_to_target, decode_compact, target_to_bits

FIXTURE = Path(__file__).parent / "fixtures" / "asert-aserti3-2d-vectors.txt"
SPACING, HALFLIFE = 600, 172_800


def _runs() -> list[tuple[str, dict, list[tuple[int, int, int]]]]:
    runs: list[tuple[str, dict, list]] = []
    for line in FIXTURE.read_text().splitlines():
        if line.startswith("## run"):
            runs.append((line[3:].split(" - ")[0], {}, []))
        elif line.startswith("##   ") and runs:
            key, value = line[5:].split(":", 1)
            runs[-1][1][key.strip()] = int(value.strip(), 0)
        elif line and not line.startswith("#"):
            _, height, time, bits = line.split()
            runs[-1][2].append((int(height), int(time), int(bits, 16)))
    return runs


RUNS = _runs()


def _rule(anchor: dict) -> AsertRule:
    return AsertRule(spacing=SPACING, halflife=HALFLIFE, pow_limit=MAINNET_POW_LIMIT,
                     anchor_bits=anchor["anchor nBits"], anchor_parent_time=anchor["anchor ancestor time"],
                     anchor_height=anchor["anchor height"])


@pytest.fixture(autouse=True)
def _no_remembered_targets():
    """ASERT's bits are cached by exponent: each test computes its own, whatever ran before."""
    from miner.consensus.retarget import _asert_bits
    _asert_bits.cache_clear()


@pytest.mark.parametrize("name, anchor, vectors", RUNS, ids=[r[0] for r in RUNS])
def test_asert_matches_the_conformance_vectors(name, anchor, vectors):
    rule = _rule(anchor)
    got = [(h, t, rule.bits_after(h, t)) for h, t, _ in vectors]
    assert got == vectors


def test_the_vectors_tell_truncation_from_floor():
    """The vectors would catch a floored exponent: some have a negative exponent with a
    remainder, where C++'s `/` and Python's `//` differ, and for some of those the two give
    different nBits."""
    from miner.consensus.retarget import ASERT_RADIX, _asert_bits
    differing = 0
    for _, anchor, vectors in RUNS:
        for height, time, expected in vectors:
            numerator = ((time - anchor["anchor ancestor time"]) - SPACING * (height - anchor["anchor height"] + 1)) \
                * ASERT_RADIX
            if numerator < 0 and numerator % HALFLIFE:
                floored = _asert_bits(anchor["anchor nBits"], numerator // HALFLIFE, MAINNET_POW_LIMIT)
                differing += floored != expected
    assert differing >= 3


# Bitcoin Core src/test/arith_uint256_tests.cpp, "bignum_SetCompact": (compact, value, negative, overflow)
CORE_SET_COMPACT = [
    (0x00000000, 0, False, False),
    (0x00123456, 0, False, False),
    (0x01003456, 0, False, False),
    (0x02000056, 0, False, False),
    (0x03000000, 0, False, False),
    (0x04000000, 0, False, False),
    (0x00923456, 0, False, False),
    (0x01803456, 0, False, False),
    (0x02800056, 0, False, False),
    (0x03800000, 0, False, False),
    (0x04800000, 0, False, False),
    (0x01123456, 0x12, False, False),
    (0x01FEDCBA, 0x7E, True, False),
    (0x02123456, 0x1234, False, False),
    (0x03123456, 0x123456, False, False),
    (0x04123456, 0x12345600, False, False),
    (0x04923456, 0x12345600, True, False),
    (0x05009234, 0x92340000, False, False),
    (0x20123456, 0x1234560000000000000000000000000000000000000000000000000000000000, False, False),
]

# Core's overflow rule, `nWord != 0 && (nSize > 34 || (nWord > 0xff && nSize > 33) ||
# (nWord > 0xffff && nSize > 32))`, at each size where one of its clauses starts to bite.
OVERFLOW_EDGES = [
    (0x2000FFFF, False),  # size 32: any 23-bit word fits
    (0x207FFFFF, False),
    (0x2100FFFF, False),  # size 33: 16 bits fit ...
    (0x21010000, True),   # ... 17 do not, the smallest such word included
    (0x21010001, True),   # (the size-33 clause)
    (0x220000FF, False),  # size 34: 8 bits fit ...
    (0x22000100, True),   # ... 9 do not
    (0x23000001, True),   # size 35: nothing fits
    (0x23000000, False),  # a zero word never overflows
    (0xFF123456, True),
]


@pytest.mark.parametrize("compact, value, negative, overflow", CORE_SET_COMPACT)
def test_set_compact_as_core_tests_it(compact, value, negative, overflow):
    assert decode_compact(compact) == (value, negative, overflow)


@pytest.mark.parametrize("compact, overflow", OVERFLOW_EDGES)
def test_overflow_at_each_size_boundary(compact, overflow):
    assert decode_compact(compact)[2] is overflow
    if overflow:
        with pytest.raises(InvalidInput, match="overflow"):
            bits_to_target(compact)


def test_get_compact_round_trips_and_moves_a_sign_bit_into_the_exponent():
    # Core's GetCompact for the values above (the negative ones lose their sign: targets are
    # never negative), and the case where the mantissa's top bit would read as a sign.
    assert target_to_bits(0x12) == 0x01120000
    assert target_to_bits(0x80) == 0x02008000
    assert target_to_bits(0x12345600) == 0x04123456
    assert target_to_bits(0x92340000) == 0x05009234
    assert target_to_bits(0xFFFF << 208) == 0x1D00FFFF
    for bits in (0x1D00FFFF, 0x1802AEE8, 0x207FFFFF, 0x01010000):
        assert target_to_bits(bits_to_target(bits)) == bits


def test_work_and_difficulty_as_core_reports_them():
    """Core's getblockheader for mainnet's genesis (bits 1d00ffff): chainwork 0x100010001,
    difficulty 1; block 100,000 (bits 1b04864c): difficulty 14484.1623612254."""
    from miner.primitives.compact import difficulty, work
    assert work(bits_to_target(0x1D00FFFF)) == 0x100010001
    assert work(0) == 1 << 256 and work((1 << 256) - 1) == 1 and work(1) == 1 << 255
    assert difficulty(bits_to_target(0x1D00FFFF)) == 1.0
    assert difficulty(bits_to_target(0x1B04864C)) == pytest.approx(14484.1623612254, rel=1e-12)
    assert difficulty(1) == pytest.approx(0xFFFF * 2.0**208)  # the hardest target there is
    with pytest.raises(InvalidInput) as info:
        difficulty(0)
    assert str(info.value) == "difficulty of a zero target is undefined"
    for bad in (-1, 1 << 256):
        with pytest.raises(InvalidInput) as info:
            target_to_bits(bad)
        assert str(info.value) == f"target out of range: {bad}"


def test_bits_out_of_range_and_text_that_is_not_bits():
    from miner.primitives.compact import parse_bits
    assert decode_compact(0xFFFFFFFF)[2] is True  # the largest 32-bit value decodes (and overflows)
    for bad in (-1, 1 << 32):
        with pytest.raises(InvalidInput, match="32-bit unsigned"):
            decode_compact(bad)
    assert parse_bits("0x1d00ffff") == parse_bits(" 1D00FFFF ") == 0x1D00FFFF and parse_bits("ff") == 0xFF
    for bad in ("", "0x", "1d00ffff0", "123456789", "1d00fffg", "xx"):
        with pytest.raises(InvalidInput, match="up to 8 hex digits"):
            parse_bits(bad)


def test_division_truncates_toward_zero_with_every_sign():
    """C++'s `/`, which the consensus code divides with (Python's `//` floors)."""
    from miner.consensus.retarget import _div_trunc
    cases = {(7, 2): 3, (-7, 2): -3, (7, -2): -3, (-7, -2): 3, (-5, 1): -5, (5, -1): -5, (0, 3): 0, (6, 3): 2}
    assert {k: _div_trunc(*k) for k in cases} == cases


def test_targets_are_clamped_between_one_and_the_pow_limit():
    from miner.consensus.retarget import _clamped_bits
    limit = bits_to_target(0x207FFFFF)
    assert _clamped_bits(0, limit) == target_to_bits(1) == 0x01010000  # never a zero target
    assert _clamped_bits(1, limit) == 0x01010000
    assert (_clamped_bits(limit, limit) == _clamped_bits(limit + 1, limit) == _clamped_bits(limit * 8, limit)
            == 0x207FFFFF)
