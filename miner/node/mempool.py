"""Transactions waiting for a block: checked for structure, bounded in count and bytes.

This chain commits to transactions by merkle root but keeps no coin set: inputs, scripts and
amounts are not validated (docs/guide/node.md says so), so the pool holds any well-formed transaction,
first come first served, and a full pool refuses new ones rather than evicting (without fees
there is nothing to rank by). `sequence` counts changes, for getblocktemplate's longpollid.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from miner.consensus.checks import check_transaction
from miner.primitives.transaction import Transaction

MAX_TXS = 5_000
# Core's policy: a transaction under 65 bytes without its witness could pass for a 64-byte inner
# node of a merkle tree (CVE-2017-12842), so no node relays or mines one.
MIN_STANDARD_TX_NONWITNESS_SIZE = 65
MAX_BYTES = 16 * 1024 * 1024


class MempoolRejected(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Entry:
    tx: Transaction
    time: int
    height: int  # chain height when it arrived


class Mempool:
    def __init__(self, max_txs: int = MAX_TXS, max_bytes: int = MAX_BYTES):
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()  # txid -> entry, arrival order
        self.bytes = 0
        self.sequence = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, txid: bytes) -> bool:
        return txid in self.entries

    def add(self, tx: Transaction, height: int) -> bool:
        """Add a transaction; False if it was already there. Raises MempoolRejected."""
        if tx.txid in self.entries:
            return False
        if tx.is_coinbase:
            raise MempoolRejected("coinbase")
        reason = check_transaction(tx)
        if reason:
            raise MempoolRejected(reason)
        if tx.base_size < MIN_STANDARD_TX_NONWITNESS_SIZE:
            raise MempoolRejected("tx-size-small")
        if len(self.entries) >= self.max_txs or self.bytes + len(tx.raw) > self.max_bytes:
            raise MempoolRejected("mempool full")
        self.entries[tx.txid] = Entry(tx, int(time.time()), height)
        self.bytes += len(tx.raw)
        self.sequence += 1
        return True

    def remove(self, txids) -> int:
        """Forget transactions (mined in a block); returns how many were here."""
        gone = 0
        for t in txids:
            entry = self.entries.pop(t, None)
            if entry is not None:
                self.bytes -= len(entry.tx.raw)
                gone += 1
        if gone:
            self.sequence += 1
        return gone

    def for_block(self, max_weight: int) -> list[Transaction]:
        """Transactions in arrival order (a parent before its child) up to `max_weight`."""
        out, weight = [], 0
        for entry in self.entries.values():
            w = entry.tx.weight
            if weight + w > max_weight:
                continue
            out.append(entry.tx)
            weight += w
        return out
