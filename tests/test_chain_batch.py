"""Blocks stored in batches (a sync's: one transaction for what arrived together): each judged
after those before it, a refused one costing only itself, and a failure of the file storing
none of the batch with the index read back from the file."""

from __future__ import annotations

import sqlite3

import pytest
from support.blockmaker import NOW, make_block, params

from miner.chain.chain import Chain
from miner.chain.outcome import BlockResult
from miner.errors import ChainError


def _line(chain: Chain, n: int, tag: bytes) -> list:
    """n blocks in a row on the tip, made against a scratch copy so none is stored yet."""
    blocks, parent = [], chain.tip_hash
    scratch = Chain.create(chain.path.with_name(f"scratch-{tag.decode()}.sqlite"), chain.params)
    try:
        for block in chain_blocks(chain):
            scratch.add_block(block, now=NOW)
        for i in range(n):
            block = make_block(scratch, parent, 10, tag + b"%d" % i)
            scratch.add_block(block, now=NOW)
            blocks.append(block)
            parent = block.hash
    finally:
        scratch.close()
    return blocks


def chain_blocks(chain: Chain) -> list:
    return [chain.block(h) for h in range(1, chain.height + 1)]


def test_a_batch_is_judged_in_order_and_a_refused_block_costs_only_itself(tmp_path):
    chain = Chain.create(tmp_path / "c.sqlite", params("flat"))
    try:
        good = _line(chain, 4, b"g")
        bad = make_block(chain, chain.tip_hash, 10, b"bad", bad_merkle=True)
        orphan = good[3]
        outcomes = chain.add_blocks([good[0], bad, good[1], orphan, good[2]], now=NOW)
        assert [o.height for o in outcomes if o.stored] == [1, 2, 3]
        assert outcomes[1].result is BlockResult.MUTATED and outcomes[1].reason == "bad-txnmrklroot"
        assert outcomes[3].result is BlockResult.MISSING_PREV  # its parent came later in the batch
        assert chain.height == 3 and chain.tip_hash == good[2].hash
        reopened = Chain.open(chain.path, readonly=True)
        assert reopened.height == 3 and reopened.tip_hash == good[2].hash
        reopened.close()
        assert chain.add_blocks([orphan], now=NOW)[0].height == 4
    finally:
        chain.close()


def test_a_failure_of_the_file_mid_batch_stores_none_and_the_index_follows_the_file(tmp_path):
    chain = Chain.create(tmp_path / "c.sqlite", params("flat"))
    try:
        blocks = _line(chain, 5, b"f")
        chain.add_block(blocks[0], now=NOW)
        # the file refuses the batch's third row, as a full disk would refuse a page
        chain.store.conn.execute("CREATE TRIGGER full BEFORE INSERT ON blocks WHEN NEW.height = 4 "
                           "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        with pytest.raises((ChainError, sqlite3.Error)):
            chain.add_blocks(blocks[1:], now=NOW)
        assert chain.height == 1 and chain.tip_hash == blocks[0].hash  # memory went back with the file
        assert all(chain.node(b.hash) is None for b in blocks[1:])
        chain.store.conn.execute("DROP TRIGGER full")
        assert [o.height for o in chain.add_blocks(blocks[1:], now=NOW)] == [2, 3, 4, 5]
        assert chain.verify(now=NOW) == 5
    finally:
        chain.close()
