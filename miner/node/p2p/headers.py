"""Headers held before their bodies: the first half of headers-first sync.

A peer's headers are checked on their own as they arrive (they link to each other and to a
block we know, each meets the proof of work its bits claim, the bits the retarget rule demands,
a time after the median time past) and kept here, with height and cumulative work, until the
block arrives and the chain stores it. Each peer's best header tells the node which blocks to
fetch from it and in what order, long before it has them; `getchaintips` shows these branches
as `headers-only`, as Core does.

Every operation a peer can trigger per message is linear in what it sent, never in what is
held: an entry knows whether an ancestor is invalid (inherited when it is added, spread in one
pass when a header is found invalid, which costs the peer its connection), and a skip pointer
(Core's CBlockIndex::pskip) finds the ancestor at any height in a logarithmic number of steps,
so a peer's next blocks are found without walking its whole branch.

Held headers always form whole paths down to stored blocks: blocks are stored parents first, and
whatever is dropped is dropped from the leaves down (`evict`) or with everything above it
(`keep_only`). Memory is bounded: on an easy chain (regtest's bits) headers cost
nothing to make, so at `MAX_HEADERS_HELD` the branches that cannot beat our tip go first, then
the least-work leaves nobody is fetching, and only then are new headers refused. An entry keeps
only what sync reads again (hash, parent, height, work, time, bits), not the header itself.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from miner.chain.index import block_work
from miner.primitives.header import BlockHeader

MAX_HEADERS_HELD = 200_000
EVICT_SHARE = 20  # a full tree frees at least 1/20 of its room at once, so its pass is rare


def skip_height(height: int) -> int:
    """The height an entry's skip pointer reaches: Core's skip list (chain.cpp), which makes
    any ancestor reachable in O(log n) steps: clear the lowest set bit, twice for odd heights."""
    if height < 2:
        return 0
    if not height & 1:
        return height & (height - 1)
    n = height - 1
    n &= n - 1
    return (n & (n - 1)) + 1


@dataclass(slots=True)
class HeaderEntry:
    hash: bytes
    parent: bytes
    height: int
    chainwork: int
    time: int
    bits: int
    skip: bytes | None = None  # the held ancestor at skip_height(height); None when that was stored
    invalid: bool = False  # this header or a held ancestor is invalid
    children: int = 0  # held headers built on this one (none: a leaf, which eviction may take)


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
        # A full tree's failed search for room is not repeated for every message a stranger
        # sends: it is worth trying again only after something left, or for a run with more work
        # (peers that deliver blocks are few, and always searched for).
        self._removals = 0
        self._failed: tuple[int, int] | None = None  # (removals then, the most work refused)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, headers: list[BlockHeader], hashes: list[bytes], anchor: Anchor | None,
            tip_work: int = 0, protect: Iterable[bytes] = (), any_work: bool = False) -> list[HeaderEntry]:
        """Hold a linked run of headers whose first builds on `anchor` (a stored block) or on a
        held header (`anchor` None). Headers already held are skipped; the new entries come back.
        When full, branches with no more work than `tip_work` (our tip's) make room first, then
        the least-work leaves outside `protect` (and what is below it: what is being fetched) with
        less work than the run brings, or of any work when `any_work` (a peer that delivers
        blocks); HeadersFull if that is not enough."""
        up = None if anchor is not None else self.entries.get(headers[0].prev_hash)
        if up is not None:
            start, parent = Anchor(up.height, up.chainwork, not up.invalid), up.hash  # the parent's bytes: shared
        elif anchor is not None:
            start, parent = anchor, headers[0].prev_hash
        else:
            raise KeyError("the run's parent is neither stored nor held")
        fresh = sum(1 for h in hashes if h not in self.entries)
        if fresh and len(self.entries) + fresh > self.limit:
            self._make_room(fresh, start.chainwork + sum(block_work(h.bits) for h in headers), tip_work,
                            parent if up is not None else None, protect, any_work)
        return self._hold(headers, hashes, start, parent)

    def _hold(self, headers: list[BlockHeader], hashes: list[bytes], start: Anchor, parent: bytes) -> list[HeaderEntry]:
        height, work, invalid = start.height, start.chainwork, not start.valid
        below = self.entries.get(parent)  # the held entry the run starts on, if any
        path: list[HeaderEntry] = []  # this run's entries on the way, by height from start.height + 1
        new = []
        for header, h in zip(headers, hashes, strict=True):
            height += 1
            work += block_work(header.bits)
            held = self.entries.get(h)
            if held is not None:
                invalid, parent = held.invalid, held.hash
                path.append(held)
                continue
            reach = skip_height(height)
            if reach > start.height:  # within this run: no walk needed
                lower: HeaderEntry | None = path[reach - start.height - 1]
            else:
                lower = self.ancestor(below, reach) if below is not None else None
            entry = HeaderEntry(h, parent, height, work, header.time, header.bits,
                                lower.hash if lower is not None else None, invalid)
            self.entries[h] = entry
            if (up := self.entries.get(parent)) is not None:
                up.children += 1
            new.append(entry)
            path.append(entry)
            parent = h
            if self._best_known and not invalid and (self._best is None or work > self._best.chainwork):
                self._best = entry
        return new

    def _make_room(self, fresh: int, run_work: int, tip_work: int, held_parent: bytes | None,
                   protect: Iterable[bytes], any_work: bool) -> None:
        full = HeadersFull(f"{len(self.entries)} headers are already waiting for their blocks")
        if not any_work and self._failed is not None and self._failed[0] == self._removals \
                and run_work <= self._failed[1]:
            raise full
        # Leaves only are taken, so keeping a header keeps everything below it too.
        keep = {*protect, *([held_parent] if held_parent else [])}
        need = len(self.entries) + fresh - self.limit
        self.evict(max(need, self.limit // EVICT_SHARE), keep, None if any_work else run_work, at_least=need,
                   losers=tip_work if run_work > tip_work else None)
        if len(self.entries) + fresh > self.limit:
            if not any_work:
                before = self._failed[1] if self._failed is not None and self._failed[0] == self._removals else 0
                self._failed = (self._removals, max(run_work, before))
            raise full

    def has_room(self, count: int) -> bool:
        return len(self.entries) + count <= self.limit

    # ------------------------------------------------------------------ walking

    def ancestor(self, entry: HeaderEntry, height: int) -> HeaderEntry | None:
        """The held ancestor of `entry` (itself included) at `height`; None when that block is
        stored (below the held part of the branch) or `height` is above `entry`. Core's
        GetAncestor: a skip pointer when it does not overshoot, else the parent. A skip that is
        wanted but missing points below the held part, so the answer is None at once."""
        if height > entry.height or height < 0:
            return None
        walk, at = entry, entry.height
        while at > height:
            jump, jump_prev = skip_height(at), skip_height(at - 1)
            if jump == height or (jump > height and not (jump_prev < jump - 2 and jump_prev >= height)):
                nxt = self.entries.get(walk.skip) if walk.skip is not None else None
                if nxt is None:
                    return None
                walk, at = nxt, jump
            else:
                nxt = self.entries.get(walk.parent)
                if nxt is None:
                    return None
                walk, at = nxt, at - 1
        return walk

    def first_held(self, entry: HeaderEntry, hint: int = 0) -> HeaderEntry:
        """The lowest held ancestor of `entry`: the first block of its branch we lack. `hint`, a
        height where it was before, narrows the search (it moves up as blocks are stored)."""
        lo, hi = 0, entry.height  # held heights are one unbroken run up to the entry
        if 0 < hint <= entry.height:
            at = self.ancestor(entry, hint)
            if at is None:
                lo = hint + 1
            elif at.parent not in self.entries:
                return at
            else:
                hi = hint
        while lo < hi:
            mid = (lo + hi) // 2
            if self.ancestor(entry, mid) is None:
                lo = mid + 1
            else:
                hi = mid
        found = self.ancestor(entry, lo)
        assert found is not None
        return found

    def run(self, entry: HeaderEntry, low: int, high: int) -> list[HeaderEntry]:
        """The held ancestors of `entry` from height `low` to `high`, oldest first (fewer where
        the held part starts higher)."""
        top = self.ancestor(entry, min(high, entry.height))
        out = []
        while top is not None and top.height >= low:
            out.append(top)
            top = self.entries.get(top.parent)
        out.reverse()
        return out

    def ancestors(self, tips: Iterable[bytes]) -> set[bytes]:
        """Every held header on the way down from the held `tips`, the tips included."""
        out: set[bytes] = set()
        for h in tips:
            while h in self.entries and h not in out:
                out.add(h)
                h = self.entries[h].parent
        return out

    def path_to(self, entry: HeaderEntry) -> list[HeaderEntry]:
        """The held headers from the first whose parent is stored up to `entry`, oldest first:
        the blocks to fetch, in the order the chain can take them."""
        return self.run(entry, 0, entry.height)

    # ------------------------------------------------------------------ changes

    def stored(self, block_hash: bytes) -> None:
        """The block arrived and the chain has it: it is no longer headers-only."""
        gone = self.entries.pop(block_hash, None)
        if gone is not None:
            if (up := self.entries.get(gone.parent)) is not None:
                up.children -= 1
            self._removals += 1
            if gone is self._best or gone.invalid:
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
        was stored or dropped or a header was found invalid."""
        if not self._best_known:
            best = None
            for e in self.entries.values():
                if not e.invalid and (best is None or e.chainwork > best.chainwork):
                    best = e
            self._best, self._best_known = best, True
        return self._best

    def keep_only(self, tips: Iterable[bytes]) -> int:
        """Forget every held header that is not on the way down to one of `tips` (the branches
        somebody still claims or is fetching). How many were forgotten."""
        kept = self.ancestors(tips)
        return self._drop([h for h in self.entries if h not in kept])

    def evict(self, count: int, keep: set[bytes], below_work: int | None = None, at_least: int = 0,
              losers: int | None = None) -> int:
        """Drop headers from the leaves down, the least-work leaf first, never one in `keep` (nor,
        as leaves only are taken, anything below it) nor, when `below_work` is given, one with
        that much work or more: up to `count` of them, and nothing when fewer than `at_least`
        could go. With `losers` (our tip's work), every branch that cannot beat such a tip (or is
        invalid) goes first, all of it, whatever `count` says. How many were dropped.

        One pass over the entries finds the leaves (each entry counts its held children); the
        rest is a heap of the leaves, not of everything held."""
        def work(e: HeaderEntry) -> int:
            return -1 if e.invalid else e.chainwork

        def candidate(e: HeaderEntry) -> bool:
            return not e.children and e.hash not in keep and (
                below_work is None or work(e) < below_work or (losers is not None and work(e) <= losers))
        heap = [(work(e), -e.height, e.hash) for e in self.entries.values() if candidate(e)]
        heapq.heapify(heap)
        sure: list[bytes] = []  # losers: dropped whatever happens
        more: list[bytes] = []  # the rest, up to `count`: dropped only if at least `at_least` can go
        children: dict[bytes, int] = {}
        while heap:
            w, _, h = heapq.heappop(heap)
            if losers is not None and w <= losers:
                sure.append(h)
            elif len(sure) + len(more) < count and (below_work is None or w < below_work):
                more.append(h)
            else:
                break
            parent = self.entries[h].parent
            up = self.entries.get(parent)
            if up is not None:
                children[parent] = children.get(parent, up.children) - 1
                if not children[parent] and up.hash not in keep:
                    heapq.heappush(heap, (work(up), -up.height, up.hash))
        if len(sure) + len(more) < at_least:
            more = []
        return self._drop(sure + more)

    def _drop(self, hashes: list[bytes]) -> int:
        for h in hashes:
            gone = self.entries.pop(h)
            if (up := self.entries.get(gone.parent)) is not None:
                up.children -= 1
        if hashes:
            self._best_known = False
            self._removals += 1
        return len(hashes)

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
