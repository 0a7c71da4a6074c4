"""The hashlib reference search: slow, obviously right, the yardstick for every fast backend."""

from __future__ import annotations

import hashlib
import struct

from miner.backends.base import Backend
from miner.backends.work import KernelWork, check_range

_pack = struct.Struct("<I").pack


def reference_hits(work: KernelWork, nonce_start: int, count: int) -> list[int]:
    """Every nonce in [nonce_start, nonce_start+count) whose proof-of-work hash meets the work's
    target.

    For sha256d, reuses hashlib's state after the first 64 header bytes (the midstate) so only
    the second block and the second hash are computed per nonce, as the kernels do.
    """
    check_range(nonce_start, count)
    if work.pow == "scrypt":
        return _scrypt_hits(work, nonce_start, count)
    first = hashlib.sha256(work.header_prefix[:64])
    tail = work.header_prefix[64:]
    target = work.target
    sha256 = hashlib.sha256
    hits = []
    for nonce in range(nonce_start, nonce_start + count):
        h = first.copy()
        h.update(tail + _pack(nonce))
        if int.from_bytes(sha256(h.digest()).digest(), "little") <= target:
            hits.append(nonce)
    return hits


def _scrypt_hits(work: KernelWork, nonce_start: int, count: int) -> list[int]:
    prefix, target = work.header_prefix, work.target
    hits = []
    for nonce in range(nonce_start, nonce_start + count):
        header = prefix + _pack(nonce)
        if int.from_bytes(hashlib.scrypt(header, salt=header, n=1024, r=1, p=1, dklen=32), "little") <= target:
            hits.append(nonce)
    return hits


class ReferenceBackend(Backend):
    kind = "ref"
    algorithms = frozenset({"sha256d", "scrypt"})

    def __init__(self, max_hits: int = 64, name: str = "ref"):
        super().__init__(name, "hashlib (1 thread)", max_hits)

    @property
    def initial_batch(self) -> int:
        return 1 << 14  # about 10 ms of sha256d; a first scrypt unit is cut by the coordinator's cap

    def _search(self, work: KernelWork, nonce_start: int, count: int) -> tuple[list[int], int]:
        hits = reference_hits(work, nonce_start, count)
        return hits[:self.max_hits], len(hits)
