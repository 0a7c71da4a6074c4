"""The node's getblocktemplate answer (BIP 22/23, with BIP 141's witness commitment) and the
checks a submitted block passes on top of the chain's own.

Field names, types and encodings are Bitcoin Core's: hashes in display order, `bits` and
`target` as hex, `coinbasevalue` in satoshis, `default_witness_commitment` as the hex of the
whole output script. The chain keeps no coin set, so transaction fees are unknown: each
transaction's `fee` is 0 and `coinbasevalue` is the subsidy alone (the README says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import InvalidBlock
from ..header import bits_to_target, difficulty, display_hex
from ..tx import merkle_root, script_number
from ..wire import (MAX_BLOCK_WEIGHT, WITNESS_SCALE, Block, Transaction, commitment_script,
                    find_commitment, witness_commitment, witness_root)

COIN = 10**8
# Weight kept free for the coinbase the miner builds (Core's default -blockreservedweight).
COINBASE_RESERVED_WEIGHT = 8_000
SIGOP_LIMIT = 80_000


@dataclass(frozen=True)
class TipInfo:
    """What templates and the info methods need of the active tip, read once per tip change."""

    height: int
    hash: bytes
    time: int
    bits: int
    chainwork: int
    median_time: int  # median time past of the tip (Core's `mediantime`)
    next_bits: int
    next_target: int
    next_min_time: int  # earliest time the next block may carry
    chain_name: str
    halving_interval: int


def halving_interval(chain_name: str) -> int:
    """Blocks between subsidy halvings: Bitcoin's 210,000, or regtest's 150 for local chains."""
    return 210_000 if chain_name == "mainnet" else 150


def subsidy(height: int, interval: int) -> int:
    halvings = height // interval
    return 0 if halvings >= 64 else (50 * COIN) >> halvings


def longpoll_id(tip_hash: bytes, mempool_sequence: int) -> str:
    """Core's form: the tip's hash then a counter of mempool changes."""
    return f"{display_hex(tip_hash)}{mempool_sequence}"


def block_template(tip: TipInfo, txs: Sequence[Transaction], now: int, longpollid: str) -> dict:
    height = tip.height + 1
    index = {t.txid: i for i, t in enumerate(txs, start=1)}
    entries = []
    for i, t in enumerate(txs, start=1):
        depends = sorted({index[x.prev_hash] for x in t.inputs
                          if x.prev_hash in index and index[x.prev_hash] < i})
        entries.append({"data": t.raw.hex(), "txid": display_hex(t.txid), "hash": display_hex(t.wtxid),
                        "depends": depends, "fee": 0, "sigops": 0, "weight": t.weight})
    wroot = merkle_root([bytes(32)] + [t.wtxid for t in txs])
    return {
        "capabilities": ["proposal"],
        "version": 0x20000000,
        "rules": ["!segwit"],
        "vbavailable": {},
        "vbrequired": 0,
        "previousblockhash": display_hex(tip.hash),
        "transactions": entries,
        "coinbaseaux": {},
        "coinbasevalue": subsidy(height, tip.halving_interval),
        "longpollid": longpollid,
        "target": f"{tip.next_target:064x}",
        "mintime": tip.next_min_time,
        "mutable": ["time", "transactions", "prevblock"],
        "noncerange": "00000000ffffffff",
        "sigoplimit": SIGOP_LIMIT,
        "sizelimit": MAX_BLOCK_WEIGHT,
        "weightlimit": MAX_BLOCK_WEIGHT,
        "curtime": max(now, tip.next_min_time),
        "bits": f"{tip.next_bits:08x}",
        "height": height,
        "default_witness_commitment": commitment_script(witness_commitment(wroot)).hex(),
    }


def tip_difficulty(tip: TipInfo) -> float:
    return difficulty(bits_to_target(tip.bits))


def check_submitted(block: Block, height: int) -> None:
    """The rules of Core's CheckBlock and ContextualCheckBlock that the chain file does not
    check itself (it treats transactions as opaque bytes), in Core's order; raises
    `InvalidBlock` with Core's reject reason."""
    txs = block.txs

    def fail(reason: str, what: str) -> None:
        raise InvalidBlock(f"block {height}: {what}", height, reason)

    base_size = 80 + sum(t.base_size for t in txs)
    if not txs or len(txs) * WITNESS_SCALE > MAX_BLOCK_WEIGHT or base_size * WITNESS_SCALE > MAX_BLOCK_WEIGHT:
        fail("bad-blk-length", "size limits failed")
    if not txs[0].is_coinbase:
        fail("bad-cb-missing", "first transaction is not a coinbase")
    if any(t.is_coinbase for t in txs[1:]):
        fail("bad-cb-multiple", "more than one coinbase")
    for t in txs:
        reason = t.check_structure()
        if reason:
            fail(reason, f"transaction {display_hex(t.txid)} is malformed ({reason})")
    if not txs[0].inputs[0].script_sig.startswith(script_number(height)):
        fail("bad-cb-height", "coinbase does not start with the block height (BIP 34)")
    commitment = find_commitment(txs[0])
    if commitment is not None:
        stack = txs[0].witnesses[0] if txs[0].witnesses else ()
        if len(stack) != 1 or len(stack[0]) != 32:
            fail("bad-witness-nonce-size", "coinbase witness is not one 32-byte reserved value")
        if witness_commitment(witness_root(txs), stack[0]) != commitment:
            fail("bad-witness-merkle-match", "witness commitment does not match the witnesses")
    elif any(t.has_witness for t in txs):
        fail("unexpected-witness", "witness data without a witness commitment")
    if block.weight > MAX_BLOCK_WEIGHT:
        fail("bad-blk-weight", "weight limit failed")
