"""Jobs and the per-header work a kernel searches.

A `Job` is a block template: everything needed to build headers for any extranonce. A
`KernelWork` is one concrete 76-byte header prefix (one extranonce and time) with the values a
kernel consumes, computed once on the host: the midstate, the three tail words and the target.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from functools import cached_property

from .errors import UsageError
from .header import BlockHeader, MAX_TARGET, midstate, tail_words, target_words
from .tx import CoinbaseTemplate, root_from_branch, txid

NONCE_SPACE = 1 << 32


@dataclass(frozen=True)
class KernelWork:
    """One header prefix (all but the nonce) and the target its nonces are searched against."""

    header_prefix: bytes
    target: int
    extranonce: int = 0

    def __post_init__(self) -> None:
        if len(self.header_prefix) != 76:
            raise UsageError(f"header prefix must be 76 bytes, got {len(self.header_prefix)}")
        check_target(self.target)

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
    def _prefix_state(self) -> "hashlib._Hash":
        return hashlib.sha256(self.header_prefix[:64])

    def header_bytes(self, nonce: int) -> bytes:
        return self.header_prefix + struct.pack("<I", nonce)

    def hash_int(self, nonce: int) -> int:
        """sha256d of the header with `nonce`, as the number compared with targets (hashlib)."""
        h = self._prefix_state.copy()
        h.update(self.header_prefix[64:] + struct.pack("<I", nonce))
        return int.from_bytes(hashlib.sha256(h.digest()).digest(), "little")

    def check(self, nonce: int) -> bool:
        """The host re-check every candidate passes before it may leave a backend."""
        return self.hash_int(nonce) <= self.target


def check_target(target: int) -> None:
    if not 0 < target <= MAX_TARGET:
        raise UsageError("target must be between 1 and 2^256-1")


def check_range(nonce_start: int, count: int) -> None:
    """Reject nonce ranges no kernel can search: empty, negative or past 2^32."""
    if count <= 0:
        raise UsageError(f"nonce count must be positive, got {count}")
    if nonce_start < 0 or nonce_start + count > NONCE_SPACE:
        raise UsageError(f"nonce range [{nonce_start}, {nonce_start + count}) leaves 0..2^32-1")


@dataclass(frozen=True)
class Job:
    """A block template that the coordinator turns into work for any extranonce."""

    job_id: str
    height: int
    version: int
    prev_hash: bytes
    coinbase: CoinbaseTemplate
    branch: tuple[bytes, ...]
    time: int
    bits: int
    target: int
    extra_txs: tuple[bytes, ...] = ()
    clean: bool = True
    source_data: dict = field(default_factory=dict, compare=False, repr=False)

    def coinbase_tx(self, extranonce: int) -> bytes:
        return self.coinbase.build(extranonce)

    def merkle_root(self, extranonce: int) -> bytes:
        return root_from_branch(txid(self.coinbase_tx(extranonce)), self.branch)

    def header(self, extranonce: int, nonce: int = 0, time: int | None = None) -> BlockHeader:
        return BlockHeader(self.version, self.prev_hash, self.merkle_root(extranonce),
                           self.time if time is None else time, self.bits, nonce)

    def work(self, extranonce: int) -> KernelWork:
        prefix = self.header(extranonce).serialize()[:76]
        return KernelWork(prefix, self.target, extranonce)

    def txs(self, extranonce: int) -> list[bytes]:
        return [self.coinbase_tx(extranonce), *self.extra_txs]

    @property
    def max_extranonce(self) -> int:
        return (1 << (8 * self.coinbase.extranonce_size)) - 1


@dataclass(frozen=True)
class Solution:
    """A nonce that met the job's target, re-verified on the host."""

    job: Job
    extranonce: int
    nonce: int
    backend: str = ""

    @property
    def header(self) -> BlockHeader:
        return self.job.header(self.extranonce, self.nonce)

    @property
    def txs(self) -> list[bytes]:
        return self.job.txs(self.extranonce)
