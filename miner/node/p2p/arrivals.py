"""Blocks that arrived from peers and are not stored yet: queued to be stored, or waiting for
their parent.

Arrivals queue while a batch is being stored and go in together (one SQLite transaction per
batch), parents first where the held headers tell. A block that arrives before its parent waits
for it, if we asked for it or hold its header, and is dropped otherwise. Both are bounded, in
blocks and in bytes, so a peer cannot make the node hold more than `MAX_WAITING_BYTES` of
blocks it cannot store yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from miner.primitives.block import Block

MAX_WAITING = 1024  # blocks received before their parent, and blocks queued to be stored
MAX_WAITING_BYTES = 64 << 20


@dataclass(frozen=True)
class Arrival:
    block: Block
    sender: int  # peer id
    solicited: bool  # we asked for it or hold its header: worth waiting for its parent


class Arrivals:
    def __init__(self, max_blocks: int = MAX_WAITING, max_bytes: int = MAX_WAITING_BYTES):
        self.max_blocks, self.max_bytes = max_blocks, max_bytes
        self._queue: list[Arrival] = []
        self._pending: set[bytes] = set()  # queued, not yet stored: never asked for again meanwhile
        self._orphans: dict[bytes, list[Arrival]] = {}  # parent hash -> blocks waiting for it
        self._orphan_hashes: set[bytes] = set()
        self._bytes = 0

    def __contains__(self, block_hash: object) -> bool:
        """Arrived and not stored yet (queued or waiting for its parent)."""
        return block_hash in self._pending or block_hash in self._orphan_hashes

    def __bool__(self) -> bool:
        return bool(self._queue)

    def held(self) -> list[bytes]:
        """The hashes of every block held here."""
        return [*self._pending, *self._orphan_hashes]

    def queue(self, arrival: Arrival) -> bool:
        """Queue a block to be stored; False (dropped) when the queue is full: the block is asked
        for again when the download comes back to it."""
        size = arrival.block.size
        if len(self._queue) >= self.max_blocks or self._bytes + size > self.max_bytes:
            return False
        self._queue.append(arrival)
        self._pending.add(arrival.block.hash)
        self._bytes += size
        return True

    def take(self, count: int, order: Callable[[Arrival], int]) -> list[Arrival]:
        """The next batch to store, sorted by `order` (parents first)."""
        batch, self._queue = self._queue[:count], self._queue[count:]
        batch.sort(key=order)
        return batch

    def stored(self, arrival: Arrival) -> None:
        """The chain has judged it (stored or refused): it leaves the queue's count."""
        self._pending.discard(arrival.block.hash)
        self._bytes -= arrival.block.size

    def wait_for_parent(self, arrival: Arrival) -> bool:
        """Keep a block whose parent is unknown until the parent is stored; False when full."""
        size = arrival.block.size
        if len(self._orphan_hashes) >= self.max_blocks or self._bytes + size > self.max_bytes:
            return False
        self._orphans.setdefault(arrival.block.header.prev_hash, []).append(arrival)
        self._orphan_hashes.add(arrival.block.hash)
        self._bytes += size
        return True

    def parent_stored(self, parent: bytes) -> None:
        """The parent is stored: the blocks waiting for it join the queue."""
        for child in self._orphans.pop(parent, []):
            self._orphan_hashes.discard(child.block.hash)
            self._bytes -= child.block.size
            self._queue.append(child)
            self._pending.add(child.block.hash)
            self._bytes += child.block.size
