"""What a kernel searches: one 76-byte header prefix and a target, with the values every kernel
consumes computed once on the host (the midstate, the three tail words, the target's limbs), and
the host re-check every candidate passes before it may leave a backend."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import cached_property

from miner.consensus.pow import ALGORITHMS, scrypt_pow
from miner.errors import InvalidInput
from miner.primitives.compact import MAX_TARGET
from miner.primitives.header import midstate, tail_words, target_words

NONCE_SPACE = 1 << 32


@dataclass(frozen=True)
class KernelWork:
    """One header prefix (all but the nonce) and the target its nonces are searched against."""

    header_prefix: bytes
    target: int
    extranonce: int = 0
    pow: str = "sha256d"  # the proof-of-work hash searched: sha256d or scrypt

    def __post_init__(self) -> None:
        if len(self.header_prefix) != 76:
            raise InvalidInput(f"header prefix must be 76 bytes, got {len(self.header_prefix)}")
        check_target(self.target)
        if self.pow not in ALGORITHMS:
            raise InvalidInput(f"unknown proof of work {self.pow!r}")

    @cached_property
    def midstate(self) -> tuple[int, ...]:
        return midstate(self.header_prefix)

    @cached_property
    def tail(self) -> tuple[int, int, int]:
        return tail_words(self.header_prefix)

    @cached_property
    def target_words(self) -> tuple[int, ...]:
        return target_words(self.target)

    @cached_property
    def _prefix_state(self) -> hashlib._Hash:
        return hashlib.sha256(self.header_prefix[:64])

    def header_bytes(self, nonce: int) -> bytes:
        return self.header_prefix + struct.pack("<I", nonce)

    def hash_int(self, nonce: int) -> int:
        """The proof-of-work hash of the header with `nonce` (sha256d, or scrypt), as the number
        compared with targets, from hashlib."""
        if self.pow == "scrypt":
            return int.from_bytes(scrypt_pow(self.header_bytes(nonce)), "little")
        h = self._prefix_state.copy()
        h.update(self.header_prefix[64:] + struct.pack("<I", nonce))
        return int.from_bytes(hashlib.sha256(h.digest()).digest(), "little")

    def check(self, nonce: int) -> bool:
        """The host re-check every candidate passes before it may leave a backend."""
        return self.hash_int(nonce) <= self.target


def check_target(target: int) -> None:
    if not 0 < target <= MAX_TARGET:
        raise InvalidInput("target must be between 1 and 2^256-1")


def check_range(nonce_start: int, count: int) -> None:
    """Reject nonce ranges no kernel can search: empty, negative or past 2^32."""
    if count <= 0:
        raise InvalidInput(f"nonce count must be positive, got {count}")
    if nonce_start < 0 or nonce_start + count > NONCE_SPACE:
        raise InvalidInput(f"nonce range [{nonce_start}, {nonce_start + count}) leaves 0..2^32-1")
