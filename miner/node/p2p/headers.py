"""Headers held before their bodies: the first half of headers-first sync.

A peer's headers are checked on their own as they arrive (they link to each other and to a
block we know, each meets the proof of work its bits claim, and bits are within the chain's
limit) and kept here, with height and cumulative work, until the block arrives and the chain
stores it. The most-work header tells the node which blocks to fetch and in what order, long
before it has them; `getchaintips` shows these branches as `headers-only`, as Core does.

Memory is bounded: on an easy chain (regtest's bits) headers cost nothing to make, so a peer
could send millions; past `MAX_HEADERS_HELD` new ones are refused and the peer dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from miner.chain.index import block_work
from miner.primitives.header import BlockHeader

MAX_HEADERS_HELD = 200_000


@dataclass(slots=True)
class HeaderEntry:
    header: BlockHeader
    hash: bytes
    height: int
    chainwork: int
    invalid: bool = False

    @property
    def parent(self) -> bytes:
        return self.header.prev_hash


@dataclass(frozen=True)
class Anchor:
    """A stored block a header may build on: its height and chainwork (and whether it is valid)."""

    height: int
    chainwork: int
    valid: bool = True


class HeadersFull(Exception):
    """More headers than MAX_HEADERS_HELD are waiting for their bodies."""


class HeaderTree:
    def __init__(self, limit: int = MAX_HEADERS_HELD):
        self.entries: dict[bytes, HeaderEntry] = {}
        self.limit = limit
        self._best: HeaderEntry | None = None
        self._best_known = True  # False: recompute on the next `best()`
        self._invalid = 0

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, headers: list[BlockHeader], hashes: list[bytes], anchor: Anchor | None) -> list[HeaderEntry]:
        """Hold a linked run of headers whose first builds on `anchor` (a stored block) or on a
        held header (`anchor` None). Headers already held are skipped; the new entries come back."""
        first_parent = headers[0].prev_hash
        if anchor is None:
            up = self.entries[first_parent]
            height, work = up.height, up.chainwork
        else:
            height, work = anchor.height, anchor.chainwork
        new = []
        for header, h in zip(headers, hashes, strict=True):
            height += 1
            work += block_work(header.bits)
            if h in self.entries:
                continue
            if len(self.entries) >= self.limit:
                raise HeadersFull(f"{len(self.entries)} headers are already waiting for their blocks")
            entry = HeaderEntry(header, h, height, work)
            self.entries[h] = entry
            new.append(entry)
            if self._best_known and (self._best is None or work > self._best.chainwork) \
                    and (not self._invalid or not self._invalid_ancestor(entry)):
                self._best = entry
        return new

    def stored(self, block_hash: bytes) -> None:
        """The block arrived and the chain has it: it is no longer headers-only."""
        gone = self.entries.pop(block_hash, None)
        if gone is not None:
            self._invalid -= gone.invalid
            if gone is self._best:
                self._best_known = False

    def mark_invalid(self, block_hash: bytes) -> None:
        entry = self.entries.get(block_hash)
        if entry is not None and not entry.invalid:
            entry.invalid = True
            self._invalid += 1
            self._best_known = False

    def _invalid_ancestor(self, entry: HeaderEntry) -> bool:
        while entry is not None:
            if entry.invalid:
                return True
            entry = self.entries.get(entry.parent)
        return False

    def best(self) -> HeaderEntry | None:
        """The held header with the most work whose held ancestors are all valid (first seen
        among equals: dicts keep insertion order). Kept as headers arrive; recomputed only
        after the best one was stored or a header was found invalid."""
        if not self._best_known:
            best = None
            for e in self.entries.values():
                if (best is None or e.chainwork > best.chainwork) and \
                        (not self._invalid or not self._invalid_ancestor(e)):
                    best = e
            self._best, self._best_known = best, True
        return self._best

    def path_to(self, entry: HeaderEntry) -> list[HeaderEntry]:
        """The held headers from the first whose parent is stored up to `entry`, oldest first:
        the blocks to fetch, in the order the chain can take them."""
        out = []
        node: HeaderEntry | None = entry
        while node is not None:
            out.append(node)
            node = self.entries.get(node.parent)
        out.reverse()
        return out

    def tips(self) -> list[HeaderEntry]:
        """Held headers no held header builds on."""
        parents = {e.parent for e in self.entries.values()}
        return [e for e in self.entries.values() if e.hash not in parents]
