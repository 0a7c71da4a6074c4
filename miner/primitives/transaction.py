"""Bitcoin transactions as they travel: parse strictly, serialize, and their ids.

What reaches the node from outside (a `submitblock` block, a `sendrawtransaction` transaction)
arrives as Bitcoin serializes it, segwit marker, flag and witnesses included, and leaves the node
the same way. A transaction keeps the exact bytes it came in (`raw`): blocks are stored and
served byte for byte as they were submitted, and the txid is the hash of the serialization
without witnesses, as in Bitcoin. Whether a transaction is acceptable is a consensus question
(`miner.consensus.checks.check_transaction`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

from miner.primitives.hashes import sha256d
from miner.primitives.serialize import DecodeError, Reader, varint

WITNESS_SCALE = 4  # BIP 141: weight = base size * 3 + total size
NULL_PREVOUT = (bytes(32), 0xFFFFFFFF)


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
    def parse(cls, raw: bytes) -> Transaction:
        reader = Reader(bytes(raw))
        tx = cls.read(reader)
        reader.done("the transaction")
        return tx

    @classmethod
    def read(cls, r: Reader) -> Transaction:
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

    # The ids are hashed once per object (a frozen dataclass keeps them in its __dict__): a block
    # on its way in is judged, stored and taken out of the mempool by the same parsed object.
    @cached_property
    def txid(self) -> bytes:
        return sha256d(self.serialize(with_witness=False) if self.has_witness else self.raw)

    @cached_property
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


def strip_witness(raw: bytes) -> bytes:
    """The serialization a txid hashes: `raw` itself unless it carries the segwit marker."""
    if len(raw) > 6 and raw[4] == 0 and raw[5] == 1:
        return Transaction.parse(raw).serialize(with_witness=False)
    return raw


def txid(tx: bytes) -> bytes:
    """Transaction id in internal byte order: sha256d of the serialization without witnesses.
    Bytes that carry the segwit marker but do not parse keep their plain hash (a chain file's
    body is stored as bytes; the node refuses unparsable transactions before they get here)."""
    if len(tx) > 6 and tx[4] == 0 and tx[5] == 1:
        try:
            return sha256d(strip_witness(tx))
        except DecodeError:
            pass
    return sha256d(tx)
