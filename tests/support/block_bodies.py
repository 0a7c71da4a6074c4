"""Block bodies that break one body rule each, on a chain easy enough that it is the first rule to
fail: `CASES` maps Core's reject reason to the transactions that earn it at a height. Shared by the
live node's test (tests/test_failing_side.py) and the in-process one (tests/test_block_rules.py)."""

from __future__ import annotations

import struct
from dataclasses import replace

from miner.primitives.block import Block
from miner.primitives.coinbase import coinbase_template
from miner.primitives.compact import bits_to_target
from miner.primitives.hashes import parse_display_hex
from miner.primitives.header import BlockHeader
from miner.primitives.merkle import merkle_root
from miner.primitives.transaction import Transaction, TxOut
from miner.primitives.witness import commitment_script, witness_commitment, witness_root

from .blockmaker import spend


def witness_tx(items: tuple[bytes, ...], tag: bytes = b"w") -> Transaction:
    """A well-formed spend carrying a witness (the chain checks structure, not scripts)."""
    plain = Transaction.parse(spend(tag))
    return Transaction.parse(Transaction(plain.version, plain.inputs, plain.outputs, (items,), plain.locktime,
                                         b"").serialize())


def coinbase(height: int, outputs_extra=(), witness: tuple[bytes, ...] | None = None, tag: bytes = b"") -> Transaction:
    cb = Transaction.parse(coinbase_template(height, b"failing side " + tag).build(0))
    cb = Transaction(cb.version, cb.inputs, (*cb.outputs, *outputs_extra), (witness,) if witness else (),
                     cb.locktime, b"")
    return Transaction.parse(cb.serialize())


def mined(template: dict, txs: list[Transaction]) -> str:
    prev = parse_display_hex(template["previousblockhash"], "previousblockhash")
    bits = int(template["bits"], 16)
    header = BlockHeader(0x20000000, prev, merkle_root([t.txid for t in txs]),
                         max(template["curtime"], template["mintime"]), bits, 0)
    target = bits_to_target(bits)
    nonce = 0
    while not header.with_nonce(nonce).meets_target(target):
        nonce += 1
    return Block(header.with_nonce(nonce), tuple(txs)).serialize().hex()


def committed(height: int, others: list[Transaction], reserved: bytes = bytes(32),
               commitment: bytes | None = None) -> Transaction:
    """A coinbase committing to `others`' witnesses (or to `commitment`), with `reserved` as its
    witness."""
    draft = [coinbase(height), *others]
    value = commitment if commitment is not None else witness_commitment(witness_root(draft), bytes(32))
    return coinbase(height, (TxOut(0, commitment_script(value)),), witness=(reserved,))


CASES = {
    "bad-cb-height": lambda h: [coinbase(h + 1)],
    "bad-cb-missing": lambda h: [Transaction.parse(spend(b"first")), coinbase(h)],
    "bad-cb-multiple": lambda h: [coinbase(h), coinbase(h, tag=b"again")],
    "bad-txns-vout-negative": lambda h: [
        coinbase(h), replace(Transaction.parse(spend(b"neg")), raw=b"")],  # replaced below
    "bad-witness-nonce-size": lambda h: [committed(h, [], reserved=bytes(31))],
    "bad-witness-merkle-match": lambda h: [committed(h, [witness_tx((b"\x01",))], commitment=bytes(32)),
                                           witness_tx((b"\x01",))],
    "unexpected-witness": lambda h: [coinbase(h), witness_tx((b"\x02",))],
    "bad-blk-weight": lambda h: [committed(h, [witness_tx((bytes(1_000_000),) * 4, b"heavy")]),
                                 witness_tx((bytes(1_000_000),) * 4, b"heavy")],
}


def negative_output(h: int) -> list[Transaction]:
    raw = bytearray(spend(b"neg"))
    # the output's 8-byte value sits after version (4), 1 input (1 + 32 + 4 + 1 + 4) and 1 output count (1)
    at = 4 + 1 + 32 + 4 + 1 + 4 + 1
    raw[at:at + 8] = struct.pack("<q", -1)
    return [coinbase(h), Transaction.parse(bytes(raw))]


CASES["bad-txns-vout-negative"] = negative_output
