"""Transactions as the chain needs them: opaque bytes with a txid, a coinbase builder, merkle roots.

A block body is a list of raw transactions, the first being the coinbase. Transactions are kept as
Bitcoin-serialized bytes, so a txid is `sha256d(tx)` exactly as in Bitcoin and a real block's
merkle root can be recomputed here. The coinbase is built as a real (legacy-format) Bitcoin
transaction whose scriptSig carries the height (BIP34 style), the extranonce and a message; it is
split around the extranonce the way getblocktemplate/Stratum miners split it (coinb1, coinb2).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

from .errors import InvalidBlock
from .header import sha256d

EXTRANONCE_SIZE = 8


def varint(n: int) -> bytes:
    """Bitcoin's CompactSize encoding."""
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a CompactSize at `pos`; returns (value, new position). Raises ValueError if short."""
    if pos >= len(data):
        raise ValueError("truncated varint")
    first = data[pos]
    if first < 0xFD:
        return first, pos + 1
    size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
    if pos + 1 + size > len(data):
        raise ValueError("truncated varint")
    return int.from_bytes(data[pos + 1:pos + 1 + size], "little"), pos + 1 + size


def script_push(data: bytes) -> bytes:
    """A minimal script push of up to 75 bytes (all this module needs)."""
    if len(data) > 75:
        raise ValueError("push too long for a direct push opcode")
    return bytes([len(data)]) + data


def script_number(n: int) -> bytes:
    """A non-negative integer as Core's `CScript() << n` writes it, which is what BIP 34 compares a
    coinbase's height with: OP_0 for 0, OP_1..OP_16 for 1 to 16, else a minimal number push."""
    if n == 0:
        return b"\x00"
    if 1 <= n <= 16:
        return bytes([0x50 + n])
    out = n.to_bytes((n.bit_length() + 7) // 8, "little")
    if out[-1] & 0x80:
        out += b"\x00"
    return script_push(out)


def txid(tx: bytes) -> bytes:
    """Transaction id in internal byte order: sha256d of the serialization without witnesses.
    Bytes that carry the segwit marker but do not parse keep their plain hash (the chain treats
    transactions as opaque; the node refuses unparsable ones before they get here)."""
    if len(tx) > 6 and tx[4] == 0 and tx[5] == 1:
        from .wire import DecodeError, strip_witness
        try:
            return sha256d(strip_witness(tx))
        except DecodeError:
            pass
    return sha256d(tx)


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """Bitcoin's merkle root: pair up, hash with sha256d, duplicate the last hash on odd levels."""
    if not hashes:
        raise InvalidBlock("a block needs at least one transaction")
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def merkle_branch(hashes: Sequence[bytes]) -> list[bytes]:
    """Sibling hashes from the first leaf (the coinbase) up to the root, as Stratum sends them."""
    branch: list[bytes] = []
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        branch.append(level[1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return branch


def root_from_branch(leaf: bytes, branch: Sequence[bytes]) -> bytes:
    """Merkle root of a tree whose first leaf is `leaf`, given its branch."""
    h = leaf
    for sibling in branch:
        h = sha256d(h + sibling)
    return h


@dataclass(frozen=True)
class CoinbaseTemplate:
    """A coinbase split around its extranonce: tx = coinb1 + extranonce + coinb2."""

    coinb1: bytes
    coinb2: bytes
    extranonce_size: int = EXTRANONCE_SIZE

    def build(self, extranonce: int) -> bytes:
        return self.coinb1 + extranonce.to_bytes(self.extranonce_size, "little") + self.coinb2


def coinbase_template(height: int, message: bytes = b"", value: int = 50 * 10**8,
                      extranonce_size: int = EXTRANONCE_SIZE, script_pubkey: bytes = b"\x51",
                      extra_outputs: Sequence[tuple[int, bytes]] = ()) -> CoinbaseTemplate:
    """A legacy-format coinbase, scriptSig = height (BIP 34), extranonce, message, paying
    `value` to `script_pubkey` (OP_TRUE unless given), then `extra_outputs` (value, script) such
    as a witness commitment."""
    head = script_number(height)
    tail = script_push(message[:75]) if message else b""
    script_len = len(head) + 1 + extranonce_size + len(tail)
    if script_len > 100:
        raise ValueError("coinbase scriptSig longer than Bitcoin's 100-byte limit")
    outputs = [(value, script_pubkey), *extra_outputs]
    coinb1 = (struct.pack("<I", 1) + b"\x01" + b"\x00" * 32 + b"\xff\xff\xff\xff"
              + varint(script_len) + head + bytes([extranonce_size]))
    coinb2 = (tail + b"\xff\xff\xff\xff" + varint(len(outputs))
              + b"".join(struct.pack("<q", v) + varint(len(s)) + s for v, s in outputs)
              + struct.pack("<I", 0))
    return CoinbaseTemplate(coinb1, coinb2, extranonce_size)


def serialize_body(txs: Sequence[bytes]) -> bytes:
    """Body on disk: CompactSize count, then each transaction length-prefixed."""
    return varint(len(txs)) + b"".join(varint(len(t)) + t for t in txs)


def parse_body(data: bytes) -> list[bytes]:
    """Inverse of `serialize_body`; raises ValueError on any inconsistency."""
    count, pos = read_varint(data, 0)
    if count == 0 or count > len(data):
        raise ValueError("bad transaction count")
    txs = []
    for _ in range(count):
        n, pos = read_varint(data, pos)
        if pos + n > len(data):
            raise ValueError("truncated transaction")
        txs.append(data[pos:pos + n])
        pos += n
    if pos != len(data):
        raise ValueError("trailing bytes after the last transaction")
    return txs
