"""Headers, hashes, compact targets and kernel inputs, against real Bitcoin data and models."""

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.vectors import GENESIS_HASH, GENESIS_HEX, REAL_HEADERS

from miner.consensus.pow import (
    check_proof_of_work,
    header_meets_pow,
    proof_of_work_error,
)
from miner.errors import InvalidBits, InvalidHeader
from miner.primitives.compact import (
    DIFF1_TARGET,
    MAINNET_POW_LIMIT,
    MAX_TARGET,
    REGTEST_POW_LIMIT,
    bits_to_target,
    decode_compact,
    difficulty,
    parse_bits,
    target_to_bits,
)
from miner.primitives.hashes import display_hex, parse_display_hex
from miner.primitives.header import (
    BlockHeader,
    midstate,
    nonce_word,
    tail_words,
    target_words,
)
from miner.primitives.sha256 import IV, compress

u32 = st.integers(0, 0xFFFFFFFF)
headers = st.builds(BlockHeader, st.integers(-(1 << 31), (1 << 31) - 1), st.binary(min_size=32, max_size=32),
                    st.binary(min_size=32, max_size=32), u32, u32, u32)


def test_genesis_hashes_and_meets_its_bits():
    h = BlockHeader.from_hex(GENESIS_HEX)
    assert h.hash_hex() == GENESIS_HASH
    assert header_meets_pow(h.serialize())
    assert h.bits == 0x1D00FFFF and h.nonce == 2083236893 and h.time == 1231006505
    assert difficulty(h.target()) == 1.0


@pytest.mark.parametrize("height,hexstr,expected", REAL_HEADERS)
def test_real_headers(height, hexstr, expected):
    h = BlockHeader.from_hex(hexstr)
    assert h.hash_hex() == expected
    assert header_meets_pow(h.serialize())
    assert h.hex() == hexstr
    # One nonce off no longer meets the target (a real check, not a tautology).
    assert not header_meets_pow(h.with_nonce(h.nonce ^ 1).serialize())


def test_block_100000_links_to_its_parent_field():
    h = BlockHeader.from_hex(REAL_HEADERS[2][1])
    assert display_hex(h.prev_hash) == "000000000002d01c1fccc21636b607dfd930d31d01c3a62104612a1719011250"
    assert h.bits == 0x1B04864C
    assert round(difficulty(h.target()), 2) == 14484.16


@given(headers)
def test_serialization_round_trips(h):
    raw = h.serialize()
    assert len(raw) == 80
    assert BlockHeader.deserialize(raw) == h
    assert BlockHeader.from_hex(raw.hex()) == h


@given(st.binary(min_size=80, max_size=80))
def test_any_80_bytes_round_trip(raw):
    assert BlockHeader.deserialize(raw).serialize() == raw


@pytest.mark.parametrize("bad,why", [("zz" * 80, "hex"), ("00" * 79, "80 bytes"), ("00" * 81, "80 bytes"),
                                     ("0", "hex")])
def test_bad_header_input(bad, why):
    with pytest.raises(InvalidHeader, match=why):
        BlockHeader.from_hex(bad)


# ---------------------------------------------------------------- compact nBits

def model_decode(bits):
    """Straightforward model: mantissa * 256^(exponent-3), sign bit separate. As in Core's
    SetCompact, the sign counts only if the mantissa is non-zero *after* an exponent below 3
    has shifted it down."""
    exponent, mantissa = bits >> 24, bits & 0x7FFFFF
    value = mantissa * 256 ** (exponent - 3) if exponent >= 3 else mantissa // 256 ** (3 - exponent)
    return value, bool(bits & 0x800000) and value != 0


def model_encode(target):
    """Minimal big-endian bytes, a zero byte in front if the top bit is set, first three as mantissa."""
    raw = target.to_bytes((target.bit_length() + 7) // 8, "big") if target else b""
    if raw and raw[0] & 0x80:
        raw = b"\x00" + raw
    return (len(raw) << 24) | int.from_bytes((raw + b"\x00\x00\x00")[:3], "big")


@given(u32)
def test_decode_agrees_with_model(bits):
    value, negative, overflow = decode_compact(bits)
    mvalue, mneg = model_decode(bits)
    assert negative == mneg
    assert overflow == (mvalue >= 1 << 256)
    if not overflow:
        assert value == mvalue


@given(st.integers(0, (1 << 256) - 1))
def test_encode_agrees_with_model_and_round_trips(target):
    bits = target_to_bits(target)
    assert bits == model_encode(target)
    size = bits >> 24
    truncated = target if size <= 3 else (target >> (8 * (size - 3))) << (8 * (size - 3))
    assert decode_compact(bits)[0] == truncated
    assert not bits & 0x800000  # never encodes a sign


@pytest.mark.parametrize("bits,target", [
    (0x1D00FFFF, DIFF1_TARGET), (0x207FFFFF, 0x7FFFFF << 232), (0x1B04864C, 0x04864C << 192),
    (0x01003456, 0), (0x02008000, 0x80), (0x03123456, 0x123456), (0x04123456, 0x12345600),
    (0x05009234, 0x92340000), (0x01123456, 0x12), (0x02123456, 0x1234),
])
def test_known_compact_values(bits, target):
    """Cases from Bitcoin Core's arith_uint256 tests of SetCompact."""
    assert decode_compact(bits)[0] == target


@pytest.mark.parametrize("bits,msg", [
    (0x04923456, "negative"), (0x01FEDCBA, "negative"), (0x00000000, "zero"), (0x01003456, "zero"),
    (0xFF123456, "overflow"), (0x22010000, "overflow"), (0x23000100, "overflow"),
])
def test_invalid_bits_rejected(bits, msg):
    with pytest.raises(InvalidBits, match=msg):
        bits_to_target(bits)


# Where shift-then-flag (Core) and flag-then-shift disagree: exponent below 3, sign bit set, and
# every mantissa bit shifted out. Core's SetCompact: nSize <= 3 so nWord >>= 8 * (3 - nSize),
# then fNegative = nWord != 0 && (nCompact & 0x00800000) != 0. With nWord now zero: value 0, not
# negative, not overflow; CheckProofOfWork then fails it for the zero target, not for the sign.
@pytest.mark.parametrize("bits", [0x01803456, 0x0180FFFF, 0x02800001, 0x028000FF, 0x00800001, 0x00FFFFFF])
def test_sign_of_a_mantissa_shifted_to_zero_is_not_negative(bits):
    assert decode_compact(bits) == (0, False, False)
    with pytest.raises(InvalidBits, match="zero"):
        bits_to_target(bits)


# The same exponents with a mantissa bit that survives the shift: negative in both orders.
@pytest.mark.parametrize("bits,value", [(0x01FEDCBA, 0x7E), (0x01810000, 0x01), (0x02800100, 0x01)])
def test_sign_of_a_surviving_mantissa_is_negative(bits, value):
    assert decode_compact(bits) == (value, True, False)


def test_bits_above_pow_limit_rejected():
    with pytest.raises(InvalidBits, match="limit"):
        bits_to_target(0x1D01FFFF, pow_limit=DIFF1_TARGET)


def test_target_to_bits_known():
    assert target_to_bits(DIFF1_TARGET) == 0x1D00FFFF
    assert target_to_bits(0x80) == 0x02008000  # top bit moves into the exponent
    assert target_to_bits(0) == 0


def test_parse_bits():
    assert parse_bits("1d00ffff") == parse_bits("0x1D00FFFF") == 0x1D00FFFF
    for bad in ("", "xyz", "1d00ffff00", "0x"):
        with pytest.raises(InvalidBits):
            parse_bits(bad)


# ---------------------------------------------------------------- kernel inputs

@settings(max_examples=50)
@given(st.binary(min_size=64, max_size=64))
def test_compress_matches_hashlib_on_padded_message(block):
    # A 55-byte message fits one padded block: compare our compression with hashlib's digest.
    msg = block[:55]
    padded = msg + b"\x80" + b"\x00" * 0 + struct.pack(">Q", 55 * 8)
    state = compress(IV, padded)
    assert struct.pack(">8I", *state) == hashlib.sha256(msg).digest()


@given(headers)
def test_midstate_and_tail_rebuild_the_hash(h):
    raw = h.serialize()
    mid = midstate(raw)
    tail = tail_words(raw)
    block2 = struct.pack(">4I", *tail, nonce_word(h.nonce)) + b"\x80" + b"\x00" * 39 + struct.pack(">Q", 640)
    first = struct.pack(">8I", *compress(mid, block2))
    assert first == hashlib.sha256(raw).digest()
    second = first + b"\x80" + b"\x00" * 23 + struct.pack(">Q", 256)
    assert struct.pack(">8I", *compress(IV, second)) == h.hash()


def test_target_words_are_little_endian_limbs():
    words = target_words(DIFF1_TARGET)
    assert words[7] == 0x00000000 and words[6] == 0xFFFF0000 and sum(words[:6]) == 0
    assert sum(w << (32 * i) for i, w in enumerate(words)) == DIFF1_TARGET


def test_parse_display_hex_errors():
    with pytest.raises(InvalidHeader):
        parse_display_hex("00" * 31)
    with pytest.raises(InvalidHeader):
        parse_display_hex("g" * 64)


# ---------------------------------------------------------------- CheckProofOfWork, one function

def _hash_of(value: int) -> bytes:
    """A 32-byte hash in internal order that reads as `value`."""
    return value.to_bytes(32, "little")


@pytest.mark.parametrize("bits,limit,ok_hash,why", [
    (0x1D00FFFF, MAINNET_POW_LIMIT, DIFF1_TARGET, None),
    (0x207FFFFF, REGTEST_POW_LIMIT, REGTEST_POW_LIMIT, None),
    (0x207FFFFF, MAINNET_POW_LIMIT, 0, "limit"),  # a regtest header is not valid on mainnet
    (0x1D010000, MAINNET_POW_LIMIT, 0, "limit"),  # 2^224: one above mainnet's limit
    (0x04923456, REGTEST_POW_LIMIT, 0, "negative"),
    (0x01803456, REGTEST_POW_LIMIT, 0, "zero"),  # shifted to zero: zero, not negative
    (0x00000000, REGTEST_POW_LIMIT, 0, "zero"),
    (0x23000100, MAX_TARGET, 0, "overflow"),
    (0xFF123456, MAX_TARGET, 0, "overflow"),
])
def test_check_proof_of_work_has_cores_semantics(bits, limit, ok_hash, why):
    if why is None:
        target = bits_to_target(bits, limit)
        assert check_proof_of_work(_hash_of(target), bits, limit)  # hash equal to the target
        assert check_proof_of_work(_hash_of(0), bits, limit)
        assert not check_proof_of_work(_hash_of(target + 1), bits, limit)  # one above
        assert "above the target" in proof_of_work_error(_hash_of(target + 1), bits, limit)
    else:
        # Bad bits fail whatever the hash, even the zero hash.
        assert not check_proof_of_work(_hash_of(ok_hash), bits, limit)
        assert why in proof_of_work_error(_hash_of(ok_hash), bits, limit)


@pytest.mark.parametrize("height,hexstr,expected", REAL_HEADERS)
def test_real_headers_pass_under_mainnet_limit_only_with_their_nonce(height, hexstr, expected):
    h = BlockHeader.from_hex(hexstr)
    assert header_meets_pow(h.serialize()) and header_meets_pow(h.serialize(), MAINNET_POW_LIMIT)
    assert not header_meets_pow(h.serialize(), bits_to_target(h.bits) - 1)  # a limit below its own target: too easy
    assert not header_meets_pow(h.with_nonce(h.nonce ^ 1).serialize())
