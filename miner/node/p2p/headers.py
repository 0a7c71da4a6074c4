"""Headers held before their bodies: the first half of headers-first sync.

A peer's headers are checked on their own as they arrive (they link to each other and to a
block we know, each meets the proof of work its bits claim, the bits the retarget rule demands,
a time after the median time past) and kept here, with height and cumulative work, until the
block arrives and the chain stores it. The most-work header tells the node which blocks to
fetch and in what order, long before it has them; `getchaintips` shows these branches as
`headers-only`, as Core does.

Every operation a peer can trigger per message is linear in what it sent, never in what is
held: an entry knows whether an ancestor is invalid (inherited when it is added, spread in one
pass when a header is found invalid, which costs the peer its connection). Memory is bounded:
on an easy chain (regtest's bits) headers cost nothing to make, so when `MAX_HEADERS_HELD` is
reached the branches that cannot beat our tip are dropped first, and only then are new
headers refused (their peer dropped).
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
    invalid: bool = False  # this header or a held ancestor is invalid

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
        # Insertion order is parents first: a header is only added on a held or stored parent.
        self.entries: dict[bytes, HeaderEntry] = {}
        self.limit = limit
        self._best: HeaderEntry | None = None
        self._best_known = True  # False: recompute on the next `best()`

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, headers: list[BlockHeader], hashes: list[bytes], anchor: Anchor | None,
            tip_work: int = 0) -> list[HeaderEntry]:
        """Hold a linked run of headers whose first builds on `anchor` (a stored block) or on a
        held header (`anchor` None). Headers already held are skipped; the new entries come back.
        When full, branches with no more work than `tip_work` (our tip's) make room first."""
        up = None if anchor is not None else self.entries.get(headers[0].prev_hash)
        if anchor is None and up is None:
            raise KeyError("the run's parent is neither stored nor held")
        height, work = (anchor.height, anchor.chainwork) if up is None else (up.height, up.chainwork)
        invalid = bool(up and up.invalid) or (anchor is not None and not anchor.valid)
        run_work = work + sum(block_work(h.bits) for h in headers)
        last_held = headers[0].prev_hash if up is not None else None
        new = []
        for header, h in zip(headers, hashes, strict=True):
            height += 1
            work += block_work(header.bits)
            if h in self.entries:
                invalid = self.entries[h].invalid
                last_held = h
                continue
            if len(self.entries) >= self.limit:
                if run_work > tip_work:  # room for a branch that can beat our tip, not for others
                    self.prune(tip_work, last_held)
                if len(self.entries) >= self.limit:
                    raise HeadersFull(f"{len(self.entries)} headers are already waiting for their blocks")
            entry = HeaderEntry(header, h, height, work, invalid)
            self.entries[h] = entry
            new.append(entry)
            last_held = h
            if self._best_known and not invalid and (self._best is None or work > self._best.chainwork):
                self._best = entry
        return new

    def stored(self, block_hash: bytes) -> None:
        """The block arrived and the chain has it: it is no longer headers-only."""
        gone = self.entries.pop(block_hash, None)
        if gone is not None and (gone is self._best or gone.invalid):
            self._best_known = False

    def mark_invalid(self, block_hash: bytes) -> None:
        """The header (its block) is invalid, and so is every held header built on it."""
        entry = self.entries.get(block_hash)
        if entry is None or entry.invalid:
            return
        entry.invalid = True
        for e in self.entries.values():  # parents come first
            if not e.invalid and (up := self.entries.get(e.parent)) is not None and up.invalid:
                e.invalid = True
        self._best_known = False

    def best(self) -> HeaderEntry | None:
        """The held header with the most work and no invalid held ancestor (the first seen
        among equals). Kept as headers arrive; recomputed, in one pass, only after the best one
        was stored or a header was found invalid."""
        if not self._best_known:
            best = None
            for e in self.entries.values():
                if not e.invalid and (best is None or e.chainwork > best.chainwork):
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

    def prune(self, tip_work: int, protect: bytes | None = None) -> int:
        """Drop the held branches that cannot beat a tip with `tip_work`: every header that is
        not an ancestor of a valid held header with more work, nor of `protect` (the held end of
        a run being added, whose work is not all held yet). How many were dropped."""
        keep: set[bytes] = {protect} if protect is not None else set()
        for e in reversed(list(self.entries.values())):  # children first
            if e.hash in keep or (not e.invalid and e.chainwork > tip_work):
                keep.add(e.hash)
                keep.add(e.parent)
        gone = [h for h in self.entries if h not in keep]
        for h in gone:
            del self.entries[h]
        if gone:
            self._best_known = False
        return len(gone)

    def tips(self) -> list[tuple[HeaderEntry, bytes, int]]:
        """Held headers no held header builds on, each with the stored block its held branch
        starts from and the branch's held length (one pass, parents first)."""
        root: dict[bytes, tuple[bytes, int]] = {}
        parents = set()
        for e in self.entries.values():
            up = root.get(e.parent)
            root[e.hash] = (up[0], up[1] + 1) if up is not None else (e.parent, 1)
            parents.add(e.parent)
        return [(e, *root[e.hash]) for e in self.entries.values() if e.hash not in parents]
