"""Bitcoin's 80-byte block header and the per-job values a kernel needs.

Integers are little-endian on the wire and hash fields are in internal byte order, exactly as
Bitcoin serializes them. The block id is `hash()` (sha256d); the proof-of-work hash of a chain's
algorithm is `miner.consensus.pow`'s, kept apart so a second algorithm can plug in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from miner.errors import InvalidHeader
from miner.primitives.compact import bits_to_target
from miner.primitives.hashes import display_hex, hash_to_int, sha256d
from miner.primitives.sha256 import IV, compress

HEADER_SIZE = 80
_HEADER = struct.Struct("<I32s32sIII")


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
    def deserialize(cls, raw: bytes) -> BlockHeader:
        if len(raw) != HEADER_SIZE:
            raise InvalidHeader(f"a header is {HEADER_SIZE} bytes, got {len(raw)}")
        version, prev, merkle, time, bits, nonce = _HEADER.unpack(raw)
        # Bitcoin reads the version as a signed int32; keep that so it round-trips as shown.
        if version >= 1 << 31:
            version -= 1 << 32
        return cls(version, prev, merkle, time, bits, nonce)

    @classmethod
    def from_hex(cls, text: str) -> BlockHeader:
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

    def with_nonce(self, nonce: int) -> BlockHeader:
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
