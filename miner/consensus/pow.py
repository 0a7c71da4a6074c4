"""Proof of work: Bitcoin Core's `CheckProofOfWork`, and the algorithm a chain hashes with.

A block's id is always sha256d of its header; its proof-of-work hash is the chain's algorithm
applied to the same 80 bytes. For SHA-256d chains the two are one hash, so the check reuses the
id instead of hashing twice; a scrypt chain (Litecoin's: sha256d ids, scrypt proof of work)
hashes the header again. Another algorithm plugs in here and nowhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from miner.errors import InvalidBits, InvalidInput
from miner.primitives.compact import MAINNET_POW_LIMIT, bits_to_target
from miner.primitives.hashes import display_hex, hash_to_int, sha256d


class SerializedHeader(Protocol):
    def serialize(self) -> bytes: ...


@dataclass(frozen=True)
class PowAlgorithm:
    """A proof-of-work hash over the 80-byte header. `is_block_id`: the hash is the block id
    itself, so a caller that has the id need not hash again."""

    name: str
    hash: Callable[[bytes], bytes]
    is_block_id: bool

    def pow_hash(self, header: SerializedHeader, block_id: bytes) -> bytes:
        """The proof-of-work hash of a header whose block id is known: the id itself where
        the two are one hash, so the header is not serialized and hashed again."""
        return block_id if self.is_block_id else self.hash(header.serialize())


def scrypt_pow(header: bytes) -> bytes:
    """Litecoin's proof-of-work hash: scrypt(header, salt=header, N=1024, r=1, p=1, 32 bytes)
    (RFC 7914), little-endian like sha256d's, compared with the same target."""
    return hashlib.scrypt(header, salt=header, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)


SCRYPT_N, SCRYPT_R, SCRYPT_P = 1024, 1, 1
SHA256D = PowAlgorithm("sha256d", sha256d, is_block_id=True)
SCRYPT = PowAlgorithm("scrypt", scrypt_pow, is_block_id=False)
ALGORITHMS = {SHA256D.name: SHA256D, SCRYPT.name: SCRYPT}


def algorithm(name: str) -> PowAlgorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise InvalidInput(f"unknown proof-of-work algorithm {name!r} "
                           f"(choose from {', '.join(ALGORITHMS)})") from None


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


def header_meets_pow(header_bytes: bytes, pow_limit: int = MAINNET_POW_LIMIT,
                     algo: PowAlgorithm = SHA256D) -> bool:
    """An 80-byte header's proof of work under its own bits, as Core judges it (by default
    against Bitcoin mainnet's limit)."""
    bits = int.from_bytes(header_bytes[72:76], "little")
    return check_proof_of_work(algo.hash(header_bytes), bits, pow_limit)
