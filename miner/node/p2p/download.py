"""Block download, per peer: what each peer told us it has, what we asked it for, and which
blocks to ask it for next.

Each peer is asked for the blocks on the way to *its own* best header (Core's
FindNextBlocksToDownload), never toward a header only another peer claims: a stranger's branch
that nobody can deliver then costs its own sender the connection, not the sync from honest
peers. A peer is known to have a block when it is an ancestor of the best header it told us of
(Core's rule), so a peer that announces only its new tip serves the blocks below it too. The
blocks asked for lie within `DOWNLOAD_WINDOW` of the first block of its branch we lack, at most
`MAX_IN_FLIGHT` per peer; a block in flight with one peer is asked of no other. A peer that owes
blocks and delivers none for the stall timeout has stalled: sync drops it (a strike) and its
blocks go to others.

The state is keyed by peer id: sync owns it, and the manager only tells sync that a peer came or
went.
"""

from __future__ import annotations

import itertools
from collections.abc import Container
from dataclasses import dataclass, field

from miner.node.p2p.headers import HeaderEntry, HeaderTree

MAX_IN_FLIGHT = 16  # Core's MAX_BLOCKS_IN_TRANSIT_PER_PEER
DOWNLOAD_WINDOW = 1024  # Core's BLOCK_DOWNLOAD_WINDOW: how far past the first missing block we ask
STALL_TIMEOUT = 10.0  # s a peer that owes blocks may deliver nothing


@dataclass
class PeerDownload:
    """One peer, as block download sees it."""

    # The most-work header it told us of: it has that block and every block below it.
    best: bytes | None = None
    best_work: int = 0
    best_height: int = -1
    low: int = 0  # where its branch's first missing block was last seen (a search hint)
    # The window: hashes on the way to `best` from the first block we lacked when it was made,
    # and where in it the first one not stored since is (Core's pindexLastCommonBlock, kept so
    # the branch is not searched again for every request).
    window: list[bytes] = field(default_factory=list)
    window_for: bytes | None = None
    window_at: int = 0
    in_flight: dict[bytes, float] = field(default_factory=dict)  # block hash -> when asked
    last_delivery: float = 0.0  # when it last delivered a block we asked of it
    delivered: int = 0  # blocks we asked of it that it delivered
    unconnecting: int = 0  # headers messages that did not connect, in a row
    refused: bool = False  # headers it sent found no room in a full tree (asked again later)


class BlockDownload:
    def __init__(self, stall_timeout: float = STALL_TIMEOUT):
        self.peers: dict[int, PeerDownload] = {}
        self.in_flight: dict[bytes, int] = {}  # block hash -> the peer it was asked of
        self.stall_timeout = stall_timeout

    # ------------------------------------------------------------------ peers

    def join(self, peer: int) -> PeerDownload:
        return self.peers.setdefault(peer, PeerDownload())

    def leave(self, peer: int) -> None:
        """The peer left: its blocks in flight are free for others."""
        state = self.peers.pop(peer, None)
        if state is not None:
            for h in state.in_flight:
                if self.in_flight.get(h) == peer:
                    del self.in_flight[h]

    def saw(self, peer: int, block_hash: bytes, height: int, chainwork: int) -> None:
        """The peer has this block (and so all below it)."""
        state = self.peers.get(peer)
        if state is not None and chainwork > state.best_work:
            state.best, state.best_work, state.best_height = block_hash, chainwork, height

    def productive(self) -> list[int]:
        """Peers that delivered blocks we asked of them."""
        return [pid for pid, s in self.peers.items() if s.delivered]

    def claimed(self) -> list[bytes]:
        """The best header of every peer: the branches somebody says it can deliver."""
        return [s.best for s in self.peers.values() if s.best is not None]

    # ------------------------------------------------------------------ requests

    def asked(self, peer: int, hashes: list[bytes], now: float) -> None:
        state = self.peers[peer]
        for h in hashes:
            state.in_flight[h] = now
            self.in_flight[h] = peer

    def arrived(self, block_hash: bytes, sender: int, now: float) -> bool:
        """A block arrived from `sender`: whether it had been asked for (of anyone). The peer
        it was asked of no longer owes it; the sender is credited if it was that peer."""
        owner = self.in_flight.pop(block_hash, None)
        if owner is None:
            return False
        state = self.peers.get(owner)
        if state is not None:
            state.in_flight.pop(block_hash, None)
            if owner == sender:
                state.last_delivery = now
                state.delivered += 1
        return True

    def stalled(self, now: float) -> list[int]:
        """Peers that owe blocks and delivered none for the stall timeout (the clock restarts at
        each delivery, as Core's does, so a peer that is slow but delivering stays)."""
        return [pid for pid, s in self.peers.items()
                if s.in_flight and now - max(min(s.in_flight.values()), s.last_delivery) > self.stall_timeout]

    def next_blocks(self, peer: int, headers: HeaderTree, tip_work: int, busy: Container[bytes]) -> list[bytes]:
        """The blocks to ask `peer` for now (Core's FindNextBlocksToDownload): on the way to its
        best header if that has more work than our tip, from the first we lack, within the
        window, neither in flight with anyone nor `busy` (arrived, waiting to be stored)."""
        state = self.peers.get(peer)
        if state is None or state.best is None:
            return []
        free = MAX_IN_FLIGHT - len(state.in_flight)
        best = headers.entries.get(state.best)
        if free <= 0 or best is None or best.invalid or best.chainwork <= tip_work:
            return []
        window, at = self._window(state, best, headers)
        want: list[bytes] = []
        for h in itertools.islice(window, at, None):
            if h not in self.in_flight and h not in busy:
                want.append(h)
                if len(want) >= free:
                    break
        return want

    @staticmethod
    def _window(state: PeerDownload, best: HeaderEntry, headers: HeaderTree) -> tuple[list[bytes], int]:
        """The peer's window and where its first block we lack is: the one made before, moved
        past the blocks stored since, while it is for the same best header and half of it is
        left; otherwise made again from the held branch."""
        window, at = state.window, state.window_at
        if state.window_for == best.hash:
            while at < len(window) and window[at] not in headers.entries:
                at += 1
            if at < len(window) and (2 * at <= len(window) or window[-1] == best.hash):
                state.window_at = at
                return window, at
        first = headers.first_held(best, state.low)
        state.low = first.height
        state.window = [e.hash for e in headers.run(best, first.height, first.height + DOWNLOAD_WINDOW - 1)]
        state.window_for, state.window_at = best.hash, 0
        return state.window, 0

    # ------------------------------------------------------------------ reports

    def in_flight_heights(self, peer: int, headers: HeaderTree) -> list[int]:
        state = self.peers.get(peer)
        held = headers.entries
        return sorted(held[h].height for h in state.in_flight if h in held) if state else []
