"""A Bitcoin block: the header and its transactions, parsed once and kept with their bytes.

The one block type of the project: a block arriving over RPC (or from a peer), one the miner
solved, and one read back from the chain file are all a `Block`, so nothing is flattened to
bytes and parsed again on its way from the wire to the store and the mempool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from miner.primitives.header import HEADER_SIZE, BlockHeader
from miner.primitives.serialize import Reader, varint
from miner.primitives.transaction import WITNESS_SCALE, Transaction


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[Transaction, ...]

    @classmethod
    def parse(cls, raw: bytes) -> Block:
        r = Reader(bytes(raw))
        header = BlockHeader.deserialize(r.take(HEADER_SIZE))
        txs = tuple(Transaction.read(r) for _ in range(r.count(60)))
        r.done("the last transaction")
        return cls(header, txs)

    @classmethod
    def from_raw(cls, header: BlockHeader, raw_txs: Sequence[bytes]) -> Block:
        """A block of transactions given as bytes (each parsed; DecodeError if one is not)."""
        return cls(header, tuple(Transaction.parse(t) for t in raw_txs))

    def serialize(self) -> bytes:
        return serialize_block(self.header, self.raw_txs)

    @cached_property
    def hash(self) -> bytes:
        """The block id (sha256d of the header), internal order; hashed once per object."""
        return self.header.hash()

    @property
    def raw_txs(self) -> list[bytes]:
        return [t.raw for t in self.txs]

    @property
    def txids(self) -> list[bytes]:
        return [t.txid for t in self.txs]

    @property
    def base_size(self) -> int:
        return HEADER_SIZE + len(varint(len(self.txs))) + sum(t.base_size for t in self.txs)

    @property
    def size(self) -> int:
        return HEADER_SIZE + len(varint(len(self.txs))) + sum(len(t.raw) for t in self.txs)

    @property
    def weight(self) -> int:
        return self.base_size * (WITNESS_SCALE - 1) + self.size


def serialize_block(header: BlockHeader, raw_txs: Sequence[bytes]) -> bytes:
    """A block as Bitcoin sends it: header, CompactSize count, the transactions' own bytes."""
    return header.serialize() + varint(len(raw_txs)) + b"".join(raw_txs)
