"""Bitcoin's wire format for transactions and blocks: parse, check the structure, serialize.

What reaches the node from outside (a `submitblock` block, a `sendrawtransaction` transaction)
arrives as Bitcoin serializes it, segwit marker, flag and witnesses included, and leaves the node
the same way. Parsing is strict: every count is bounded by the bytes actually left, so a hostile
CompactSize cannot make the parser allocate, and trailing bytes are an error.

A transaction keeps the exact bytes it came in (`raw`): blocks are stored and served byte for
byte as they were submitted, and the txid is the hash of the serialization without witnesses,
as in Bitcoin.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

from .header import HEADER_SIZE, BlockHeader, sha256d
from .tx import merkle_root, read_varint, varint

MAX_BLOCK_WEIGHT = 4_000_000  # Core's consensus limit
WITNESS_SCALE = 4
# The commitment output of BIP 141: OP_RETURN, push 36, the 4-byte header, the 32-byte commitment.
WITNESS_COMMITMENT_HEADER = bytes.fromhex("6a24aa21a9ed")
WITNESS_RESERVED_VALUE = bytes(32)
NULL_PREVOUT = (bytes(32), 0xFFFFFFFF)


class DecodeError(ValueError):
    """Bytes that are not a Bitcoin transaction or block."""


class _Reader:
    """A cursor over bytes whose every read fails cleanly (DecodeError) past the end."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError("unexpected end of data")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def i64(self) -> int:
        return struct.unpack("<q", self.take(8))[0]

    def count(self, min_item_size: int) -> int:
        """A CompactSize that counts items of at least `min_item_size` bytes: more items than the
        remaining bytes could hold is an error here, before anything is allocated."""
        try:
            n, self.pos = read_varint(self.data, self.pos)
        except (ValueError, KeyError):
            raise DecodeError("unexpected end of data") from None
        if n * max(1, min_item_size) > len(self.data) - self.pos:
            raise DecodeError(f"count {n} is larger than the data left")
        return n

    def var_bytes(self) -> bytes:
        return self.take(self.count(1))


@dataclass(frozen=True)
class TxIn:
    prev_hash: bytes  # internal byte order
    prev_index: int
    script_sig: bytes
    sequence: int


@dataclass(frozen=True)
class TxOut:
    value: int  # satoshis
    script_pubkey: bytes


@dataclass(frozen=True)
class Transaction:
    """A parsed transaction; `raw` is the bytes it was parsed from (witnesses included)."""

    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    witnesses: tuple[tuple[bytes, ...], ...]  # one stack per input, or () when none
    locktime: int
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> "Transaction":
        reader = _Reader(bytes(raw))
        tx = cls.read(reader)
        if reader.pos != len(reader.data):
            raise DecodeError(f"{len(reader.data) - reader.pos} bytes after the transaction")
        return tx

    @classmethod
    def read(cls, r: _Reader) -> "Transaction":
        start = r.pos
        version = struct.unpack("<i", r.take(4))[0]
        segwit = False
        # The segwit marker is a zero input count followed by a non-zero flag (BIP 144); a real
        # zero-input transaction cannot be told apart and, as in Core, is read as segwit.
        if r.pos + 2 <= len(r.data) and r.data[r.pos] == 0 and r.data[r.pos + 1] != 0:
            if r.data[r.pos + 1] != 1:
                raise DecodeError(f"unknown segwit flag {r.data[r.pos + 1]}")
            r.pos += 2
            segwit = True
        inputs = tuple(TxIn(r.take(32), r.u32(), r.var_bytes(), r.u32()) for _ in range(r.count(41)))
        outputs = tuple(TxOut(r.i64(), r.var_bytes()) for _ in range(r.count(9)))
        witnesses: tuple[tuple[bytes, ...], ...] = ()
        if segwit:
            witnesses = tuple(tuple(r.var_bytes() for _ in range(r.count(1))) for _ in inputs)
            if not any(witnesses):
                raise DecodeError("superfluous witness record")  # Core refuses it the same way
        locktime = r.u32()
        return cls(version, inputs, outputs, witnesses, locktime, r.data[start:r.pos])

    # ------------------------------------------------------------------ serialization

    def serialize(self, with_witness: bool = True) -> bytes:
        body = (varint(len(self.inputs))
                + b"".join(i.prev_hash + struct.pack("<I", i.prev_index) + varint(len(i.script_sig))
                           + i.script_sig + struct.pack("<I", i.sequence) for i in self.inputs)
                + varint(len(self.outputs))
                + b"".join(struct.pack("<q", o.value) + varint(len(o.script_pubkey)) + o.script_pubkey
                           for o in self.outputs))
        version = struct.pack("<i", self.version)
        locktime = struct.pack("<I", self.locktime)
        if not (with_witness and self.has_witness):
            return version + body + locktime
        wit = b"".join(varint(len(stack)) + b"".join(varint(len(item)) + item for item in stack)
                       for stack in self.witnesses)
        return version + b"\x00\x01" + body + wit + locktime

    @property
    def has_witness(self) -> bool:
        return any(self.witnesses)

    @property
    def txid(self) -> bytes:
        return sha256d(self.serialize(with_witness=False) if self.has_witness else self.raw)

    @property
    def wtxid(self) -> bytes:
        return sha256d(self.raw)

    @property
    def is_coinbase(self) -> bool:
        return len(self.inputs) == 1 and (self.inputs[0].prev_hash, self.inputs[0].prev_index) == NULL_PREVOUT

    @property
    def base_size(self) -> int:
        return len(self.serialize(with_witness=False)) if self.has_witness else len(self.raw)

    @property
    def weight(self) -> int:
        return self.base_size * (WITNESS_SCALE - 1) + len(self.raw)

    def check_structure(self) -> str | None:
        """Core's CheckTransaction, the parts that need no chain state: the reject reason, or None."""
        if not self.inputs:
            return "bad-txns-vin-empty"
        if not self.outputs:
            return "bad-txns-vout-empty"
        if self.base_size * WITNESS_SCALE > MAX_BLOCK_WEIGHT:
            return "bad-txns-oversize"
        total = 0
        for out in self.outputs:
            if out.value < 0:
                return "bad-txns-vout-negative"
            if out.value > 21_000_000 * 10**8:
                return "bad-txns-vout-toolarge"
            total += out.value
            if total > 21_000_000 * 10**8:
                return "bad-txns-txouttotal-toolarge"
        prevouts = [(i.prev_hash, i.prev_index) for i in self.inputs]
        if len(set(prevouts)) != len(prevouts):
            return "bad-txns-inputs-duplicate"
        if self.is_coinbase:
            if not 2 <= len(self.inputs[0].script_sig) <= 100:
                return "bad-cb-length"
        elif NULL_PREVOUT in prevouts:
            return "bad-txns-prevout-null"
        return None


def strip_witness(raw: bytes) -> bytes:
    """The serialization a txid hashes: `raw` itself unless it carries the segwit marker."""
    if len(raw) > 6 and raw[4] == 0 and raw[5] == 1:
        return Transaction.parse(raw).serialize(with_witness=False)
    return raw


# --------------------------------------------------------------------------- blocks

@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[Transaction, ...]

    @classmethod
    def parse(cls, raw: bytes) -> "Block":
        r = _Reader(bytes(raw))
        header = BlockHeader.deserialize(r.take(HEADER_SIZE))
        txs = tuple(Transaction.read(r) for _ in range(r.count(60)))
        if r.pos != len(r.data):
            raise DecodeError(f"{len(r.data) - r.pos} bytes after the last transaction")
        return cls(header, txs)

    def serialize(self) -> bytes:
        return serialize_block(self.header, [t.raw for t in self.txs])

    @property
    def raw_txs(self) -> list[bytes]:
        return [t.raw for t in self.txs]

    @property
    def weight(self) -> int:
        base = HEADER_SIZE + len(varint(len(self.txs))) + sum(t.base_size for t in self.txs)
        total = HEADER_SIZE + len(varint(len(self.txs))) + sum(len(t.raw) for t in self.txs)
        return base * (WITNESS_SCALE - 1) + total


def serialize_block(header: BlockHeader, raw_txs: Sequence[bytes]) -> bytes:
    """A block as Bitcoin sends it: header, CompactSize count, the transactions' own bytes."""
    return header.serialize() + varint(len(raw_txs)) + b"".join(raw_txs)


# --------------------------------------------------------------------------- BIP 141

def witness_root(txs: Sequence[Transaction]) -> bytes:
    """Merkle root over wtxids, the coinbase's counted as 32 zero bytes (BIP 141)."""
    return merkle_root([bytes(32)] + [t.wtxid for t in txs[1:]])


def witness_commitment(root: bytes, reserved: bytes = WITNESS_RESERVED_VALUE) -> bytes:
    return sha256d(root + reserved)


def commitment_script(commitment: bytes) -> bytes:
    return WITNESS_COMMITMENT_HEADER + commitment


def find_commitment(coinbase: Transaction) -> bytes | None:
    """The commitment of the last output that carries one, as Core reads it."""
    found = None
    for out in coinbase.outputs:
        s = out.script_pubkey
        if len(s) >= 38 and s[:6] == WITNESS_COMMITMENT_HEADER:
            found = s[6:38]
    return found


def add_coinbase_witness(legacy_coinbase: bytes) -> bytes:
    """A one-input legacy coinbase re-serialized with the witness reserved value as its witness,
    which a block carrying a witness commitment must have (BIP 141)."""
    tx = Transaction.parse(legacy_coinbase)
    return Transaction(tx.version, tx.inputs, tx.outputs, ((WITNESS_RESERVED_VALUE,),), tx.locktime,
                       b"").serialize()
