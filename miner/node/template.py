"""The node's getblocktemplate answer (BIP 22/23, with BIP 141's witness commitment).

Field names, types and encodings are Bitcoin Core's: hashes in display order, `bits` and
`target` as hex, `coinbasevalue` in satoshis, `default_witness_commitment` as the hex of the
whole output script. The chain keeps no coin set, so transaction fees are unknown: each
transaction's `fee` is 0 and `coinbasevalue` is the subsidy alone (docs/guide/node.md says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from miner.consensus.checks import MAX_BLOCK_WEIGHT, subsidy
from miner.primitives.compact import bits_to_target, difficulty
from miner.primitives.hashes import display_hex
from miner.primitives.transaction import Transaction
from miner.primitives.witness import (
    commitment_script,
    witness_commitment,
    witness_root_of,
)

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
    wroot = witness_root_of([t.wtxid for t in txs])
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
