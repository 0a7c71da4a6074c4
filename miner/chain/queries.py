"""What a chain answers: the narrow query API the node and the miner ask (`Chain` is one).

Callers outside `miner.chain` ask these and never read the block tree: hashes by height, one
block's index entry (a copy), the active chain's times and bits, a block's history (the times and
bits it is judged against), a branch's length, chainwork at a height, and the stored blocks
themselves. Run on the chain's own thread (a node's `NodeService.on_chain`): values handed back
are copies or immutable, except the by-height lists, which a caller copies before it leaves.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from pathlib import Path

from miner.chain.index import BlockTree, ChainTip, Node
from miner.chain.store import ChainStore, parse_body, short
from miner.consensus.checks import median_time_past
from miner.consensus.params import ChainParams
from miner.consensus.retarget import RetargetRule
from miner.errors import ChainError, InvalidInput
from miner.primitives.block import Block
from miner.primitives.hashes import display_hex
from miner.primitives.header import BlockHeader


class ChainQueries:
    """The reading half of `Chain`: every answer comes from the index in memory or the store."""

    path: Path
    params: ChainParams
    rule: RetargetRule
    store: ChainStore
    tree: BlockTree

    # ------------------------------------------------------------------ the active chain

    @property
    def times(self) -> list[int]:
        """Times of the active chain by height."""
        return self.tree.times

    @property
    def bits(self) -> list[int]:
        """Bits of the active chain by height."""
        return self.tree.bits

    @property
    def tip_hash(self) -> bytes:
        return self.tree.active[-1]

    @property
    def height(self) -> int:
        return len(self.tree.active) - 1

    @property
    def chainwork(self) -> int:
        return self.tree.tip.chainwork

    def hash_at(self, height: int) -> bytes:
        """The active block at `height`."""
        if not 0 <= height <= self.height:
            raise InvalidInput(f"no block at height {height} (tip is {self.height})")
        return self.tree.active[height]

    def chainwork_at(self, height: int) -> int:
        """The active chain's cumulative work up to and including `height`."""
        self.hash_at(height)  # the range check and its message
        return self.tree.works[height]

    def next_bits(self) -> int:
        """Bits the next block on the active tip must carry."""
        return self.rule.next_bits(self.height + 1, self.times, self.bits)

    def min_next_time(self) -> int:
        """Earliest valid time for the next block (one past the median time past)."""
        return median_time_past(self.times, self.height + 1) + 1

    # ------------------------------------------------------------------ any block in the index

    def node(self, block_hash: bytes) -> Node | None:
        """A stored block's index entry (height, chainwork, status...), a copy; None if unknown."""
        node = self.tree.nodes.get(block_hash)
        return None if node is None else dataclasses.replace(node)

    def is_active(self, block_hash: bytes) -> bool:
        node = self.tree.nodes.get(block_hash)
        return node is not None and self.tree.is_active(node)

    def history(self, block_hash: bytes) -> tuple[Sequence[int], Sequence[int]]:
        """Times and bits of a stored block and all its ancestors, by height: what a child of it
        is judged against. Views over the index: copy what leaves the chain's thread."""
        node = self.tree.nodes.get(block_hash)
        if node is None:
            raise InvalidInput(f"no block with hash {display_hex(block_hash)}")
        return self.tree.history(node)

    def branch_length(self, block_hash: bytes) -> int | None:
        """How many blocks of a stored block's branch lie off the active chain (0 for an active
        block); None if the block is unknown."""
        node = self.tree.nodes.get(block_hash)
        return None if node is None else len(self.tree.branch(node))

    def tips(self) -> list[ChainTip]:
        return self.tree.tips()

    # ------------------------------------------------------------------ stored blocks

    def _stored(self, block_hash: bytes, what: str) -> tuple[bytes, bytes]:
        row = self.store.block_row(block_hash)
        if row is None:
            raise ChainError(f"{what} is in the index but not stored; run 'miner chain verify'")
        return row

    def header(self, height: int) -> BlockHeader:
        return BlockHeader.deserialize(self._stored(self.hash_at(height), f"block {height}")[0])

    def tip(self) -> BlockHeader:
        return self.header(self.height)

    def block(self, height: int) -> Block:
        return self.block_by_hash(self.hash_at(height))

    def block_by_hash(self, block_hash: bytes) -> Block:
        node = self.tree.nodes.get(block_hash)
        if node is None:
            raise InvalidInput(f"no block with hash {display_hex(block_hash)}")
        header, body = self._stored(block_hash, f"block {node.height} ({short(block_hash)})")
        try:
            return Block.from_raw(BlockHeader.deserialize(header), parse_body(body))
        except (ValueError, TypeError, struct.error, InvalidInput) as exc:
            raise ChainError(f"block {node.height} cannot be decoded ({exc}); "
                             f"run 'miner chain verify'") from None

    def block_count(self) -> int:
        """Blocks stored, on every branch, valid or marked invalid."""
        return self.store.block_count()
