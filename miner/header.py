"""Bitcoin's 80-byte block header, compact `nBits` targets and the values a kernel needs.

Byte order follows Bitcoin exactly: integers are little-endian on the wire, hashes are stored in
internal order and *shown* byte-reversed (so a block hash with leading zeros prints that way), and
a hash meets a target when, read as a little-endian 256-bit integer, it is <= the target.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, replace

from .errors import InvalidBits, InvalidHeader
from .sha256 import IV, compress

HEADER_SIZE = 80
MAX_TARGET = (1 << 256) - 1
DIFF1_BITS = 0x1D00FFFF
DIFF1_TARGET = 0xFFFF << 208  # the target of difficulty 1 (bits 0x1d00ffff)
# Bitcoin Core's consensus.powLimit for mainnet (00000000ffff...ff) and regtest (7fffff00...00).
MAINNET_POW_LIMIT = (1 << 224) - 1
REGTEST_POW_LIMIT = 0x7FFFFF << 232
_HEADER = struct.Struct("<I32s32sIII")


def sha256d(data: bytes) -> bytes:
    """Double SHA-256, Bitcoin's block and transaction hash."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash_to_int(h: bytes) -> int:
    """A 32-byte hash in internal order as the 256-bit number compared with targets."""
    return int.from_bytes(h, "little")


def display_hex(h: bytes) -> str:
    """Hash bytes in internal order shown as Bitcoin shows them (byte-reversed hex)."""
    return h[::-1].hex()


def parse_display_hex(text: str, what: str = "hash") -> bytes:
    """Inverse of `display_hex`, with a clear error for anything not 32 bytes of hex."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidHeader(f"{what} is not valid hex: {text!r}") from None
    if len(raw) != 32:
        raise InvalidHeader(f"{what} must be 32 bytes, got {len(raw)}")
    return raw[::-1]


# --------------------------------------------------------------------------- compact targets

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


def proof_of_work_error(block_hash: bytes, bits: int, pow_limit: int) -> str | None:
    """Why Bitcoin Core's `CheckProofOfWork(hash, bits, params)` would be false, or None if true.

    False for bits that encode a negative, zero or overflowing target or one above the chain's
    proof-of-work limit; otherwise the hash, as a little-endian number, must be <= the target.
    """
    try:
        target = bits_to_target(bits, pow_limit)
    except InvalidBits as exc:
        return str(exc)
    if hash_to_int(block_hash) > target:
        return f"hash {display_hex(block_hash)} is above the target of bits 0x{bits:08x}"
    return None


def check_proof_of_work(block_hash: bytes, bits: int, pow_limit: int) -> bool:
    """Bitcoin Core's `CheckProofOfWork`: the one judgement of a header's proof of work."""
    return proof_of_work_error(block_hash, bits, pow_limit) is None


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
    t = t[2:] if t.startswith("0x") else t
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


# --------------------------------------------------------------------------- the header

@dataclass(frozen=True)
class BlockHeader:
    """An 80-byte Bitcoin block header. Hash fields are in internal byte order."""

    version: int
    prev_hash: bytes
    merkle_root: bytes
    time: int
    bits: int
    nonce: int

    def __post_init__(self) -> None:
        if len(self.prev_hash) != 32 or len(self.merkle_root) != 32:
            raise InvalidHeader("prev_hash and merkle_root must be 32 bytes each")
        if not -(1 << 31) <= self.version < (1 << 32):
            raise InvalidHeader(f"version out of range: {self.version}")
        for name in ("time", "bits", "nonce"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFFFFFFFF:
                raise InvalidHeader(f"{name} must be a 32-bit unsigned value, got {value}")

    def serialize(self) -> bytes:
        return _HEADER.pack(self.version & 0xFFFFFFFF, self.prev_hash, self.merkle_root,
                            self.time, self.bits, self.nonce)

    @classmethod
    def deserialize(cls, raw: bytes) -> "BlockHeader":
        if len(raw) != HEADER_SIZE:
            raise InvalidHeader(f"a header is {HEADER_SIZE} bytes, got {len(raw)}")
        version, prev, merkle, time, bits, nonce = _HEADER.unpack(raw)
        # Bitcoin reads the version as a signed int32; keep that so it round-trips as shown.
        if version >= 1 << 31:
            version -= 1 << 32
        return cls(version, prev, merkle, time, bits, nonce)

    @classmethod
    def from_hex(cls, text: str) -> "BlockHeader":
        cleaned = "".join(text.split())
        try:
            raw = bytes.fromhex(cleaned)
        except ValueError:
            raise InvalidHeader("header is not valid hex") from None
        return cls.deserialize(raw)

    def hex(self) -> str:
        return self.serialize().hex()

    def hash(self) -> bytes:
        """Block hash in internal order."""
        return sha256d(self.serialize())

    def hash_hex(self) -> str:
        return display_hex(self.hash())

    def target(self) -> int:
        return bits_to_target(self.bits)

    def meets_target(self, target: int) -> bool:
        """Full 256-bit comparison with a given target (a share or job target): hash <= target."""
        return hash_to_int(self.hash()) <= target

    def check_pow(self, pow_limit: int = MAINNET_POW_LIMIT) -> bool:
        """The header's proof of work under its own bits, as Core's CheckProofOfWork judges it
        (by default against Bitcoin mainnet's limit)."""
        return check_proof_of_work(self.hash(), self.bits, pow_limit)

    def with_nonce(self, nonce: int) -> "BlockHeader":
        return replace(self, nonce=nonce)


# --------------------------------------------------------------------------- kernel inputs

def midstate(header_prefix: bytes) -> tuple[int, ...]:
    """SHA-256 state after the first 64 header bytes: identical for every nonce of a job."""
    if len(header_prefix) < 64:
        raise InvalidHeader("midstate needs the first 64 header bytes")
    return compress(IV, header_prefix[:64])


def tail_words(header: bytes) -> tuple[int, int, int]:
    """The three big-endian message words before the nonce: merkle-root tail, time, bits."""
    if len(header) < 76:
        raise InvalidHeader("tail words need the first 76 header bytes")
    return struct.unpack(">3I", header[64:76])


def nonce_word(nonce: int) -> int:
    """The message word the nonce becomes: SHA-256 reads big-endian, the header stores LE."""
    return int.from_bytes(nonce.to_bytes(4, "little"), "big")


def target_words(target: int) -> tuple[int, ...]:
    """Target as eight 32-bit limbs, least significant first (limb 7 is tested first)."""
    return tuple((target >> (32 * i)) & 0xFFFFFFFF for i in range(8))
