"""The coinbase transaction a miner builds, split around its extranonce.

The coinbase is a real (legacy-format) Bitcoin transaction whose scriptSig carries the height
(BIP 34, as Core's `CScript() << height` writes it), the extranonce and a message. It is split
around the extranonce the way getblocktemplate and Stratum miners split it: coinb1, then
extranonce1 (fixed per Stratum connection, empty otherwise), then extranonce2 (the part a miner
rolls), then coinb2.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from miner.primitives.serialize import varint

EXTRANONCE_SIZE = 8
MAX_COINBASE_SCRIPT = 100  # Core's bad-cb-length bound


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


@dataclass(frozen=True)
class CoinbaseTemplate:
    """A coinbase split around its extranonce: tx = coinb1 + extranonce1 + extranonce2 + coinb2,
    extranonce2 being `extranonce_size` bytes, little-endian."""

    coinb1: bytes
    coinb2: bytes
    extranonce_size: int = EXTRANONCE_SIZE
    extranonce1: bytes = b""

    def build(self, extranonce: int) -> bytes:
        return (self.coinb1 + self.extranonce1 + extranonce.to_bytes(self.extranonce_size, "little")
                + self.coinb2)


def coinbase_template(height: int, message: bytes = b"", value: int = 50 * 10**8,
                      extranonce_size: int = EXTRANONCE_SIZE, script_pubkey: bytes = b"\x51",
                      extra_outputs: Sequence[tuple[int, bytes]] = (),
                      extranonce1: bytes = b"") -> CoinbaseTemplate:
    """A legacy-format coinbase, scriptSig = height (BIP 34), one push of extranonce1 and
    extranonce2, message, paying `value` to `script_pubkey` (OP_TRUE unless given), then
    `extra_outputs` (value, script) such as a witness commitment."""
    head = script_number(height)
    tail = script_push(message[:75]) if message else b""
    extranonce_len = len(extranonce1) + extranonce_size
    script_len = len(head) + 1 + extranonce_len + len(tail)
    if script_len > MAX_COINBASE_SCRIPT or extranonce_len > 75:
        raise ValueError("coinbase scriptSig longer than Bitcoin's 100-byte limit")
    outputs = [(value, script_pubkey), *extra_outputs]
    coinb1 = (struct.pack("<I", 1) + b"\x01" + b"\x00" * 32 + b"\xff\xff\xff\xff"
              + varint(script_len) + head + bytes([extranonce_len]))
    coinb2 = (tail + b"\xff\xff\xff\xff" + varint(len(outputs))
              + b"".join(struct.pack("<q", v) + varint(len(s)) + s for v, s in outputs)
              + struct.pack("<I", 0))
    return CoinbaseTemplate(coinb1, coinb2, extranonce_size, extranonce1)
