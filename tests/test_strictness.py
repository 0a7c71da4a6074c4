"""What Bitcoin Core refuses is refused here too, damage the start-up check used to miss is named
before anything is built on it, and two miners on one file never hash the same header (issue 21,
items 5, 7 and 10). Each test failed before the change it guards."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from miner.bench.chain_verify import GENESIS_TIME, build_easy_chain
from support.blockmaker import NOW, grow, make_block, params, solve, spend

from miner.chain.chain import Chain
from miner.errors import ChainError, InvalidBlock
from miner.node.mempool import Mempool, MempoolRejected
from miner.node.rpc.protocol import RpcError
from miner.node.rpc.registry import hex_bytes, parse_hash
from miner.primitives.block import Block
from miner.primitives.coinbase import coinbase_template
from miner.primitives.header import BlockHeader
from miner.primitives.merkle import merkle_root
from miner.primitives.serialize import DecodeError, varint
from miner.primitives.transaction import Transaction, txid

# --------------------------------------------------------------------------- Core's strictness


def test_a_non_canonical_compact_size_is_refused_anywhere_on_the_wire():
    tx = spend(b"x")
    assert Transaction.parse(tx).raw == tx
    # The input count (1) written in three bytes instead of one: the same number, not Core's bytes.
    padded = tx[:4] + b"\xfd\x01\x00" + tx[5:]
    with pytest.raises(DecodeError, match="non-canonical"):
        Transaction.parse(padded)
    header = bytes(80)
    with pytest.raises(DecodeError, match="non-canonical"):
        Block.parse(header + b"\xfe\x01\x00\x00\x00" + tx)  # a transaction count of 1 in five bytes
    assert len(Block.parse(header + varint(1) + tx).txs) == 1


def test_block_versions_below_4_are_refused_from_height_1_and_never_stored(tmp_path):
    chain = build_easy_chain(tmp_path / "c.sqlite", 3)
    try:
        now = GENESIS_TIME + 50
        parent = chain.tree.tip
        txs = [coinbase_template(4, b"v3").build(0)]
        for version in (1, 2, 3):
            header = solve(BlockHeader(version, parent.hash, merkle_root([txid(t) for t in txs]),
                                       parent.time + 1, chain.next_bits(), 0))
            with pytest.raises(InvalidBlock, match="version") as info:
                chain.add_block(Block.from_raw(header, txs), now=now)
            assert info.value.reason == f"bad-version(0x{version:08x})"
            assert chain.node(header.hash()) is None
        header = solve(BlockHeader(4, parent.hash, merkle_root([txid(t) for t in txs]), parent.time + 1,
                                   chain.next_bits(), 0))
        assert chain.add_block(Block.from_raw(header, txs), now=now).active
    finally:
        chain.close()


def test_a_transaction_under_65_bytes_without_witness_stays_out_of_the_mempool():
    small = Transaction.parse(spend(b"s"))
    assert small.base_size < 65
    pool = Mempool()
    with pytest.raises(MempoolRejected) as info:
        pool.add(small, 0)
    assert info.value.reason == "tx-size-small" and len(pool) == 0
    # The same spend paying a 5-byte script is 65 bytes: standard.
    standard = Transaction.parse(spend(b"s", b"\x51" * 5))
    assert standard.base_size == 65 and pool.add(standard, 0) and len(pool) == 1


@pytest.mark.parametrize("text", ["00 ff", " 00ff", "00ff\n", "0 0", "0g", "abc"])
def test_hex_with_whitespace_or_odd_length_is_not_hex(text):
    assert hex_bytes(text) is None
    if not text.strip().isalnum():  # whitespace inside: a hash of 64 characters is still refused
        with pytest.raises(RpcError):
            parse_hash(text + "0" * (64 - len(text)), "hash")
    assert hex_bytes("00ff") == b"\x00\xff" and hex_bytes("") == b""


def test_a_block_failing_a_context_free_rule_is_never_stored_whatever_its_work(tmp_path):
    with Chain.create(tmp_path / "t.sqlite", params("flat")) as chain:
        grow(chain, chain.tip_hash, 2, 11, b"base")
        tip = chain.node(chain.tip_hash)
        # A real coinbase second, a plain spend first: bad-cb-missing, found by CheckBlock alone.
        txs = [spend(b"first"), coinbase_template(tip.height + 1, b"late").build(0)]
        header = solve(BlockHeader(0x20000000, tip.hash, merkle_root([txid(t) for t in txs]), tip.time + 11,
                                   chain.next_bits(), 0))
        with pytest.raises(InvalidBlock) as info:
            chain.add_block(Block.from_raw(header, txs), now=NOW)
        assert info.value.reason == "bad-cb-missing"
        assert chain.node(header.hash()) is None
        assert chain.store.conn.execute("SELECT count(*) FROM blocks").fetchone()[0] == 3
        # A contextual failure with real work is still kept, marked (BIP 34's height).
        bad = make_block(chain, tip.hash, 11, b"bad", coinbase_height=99)
        with pytest.raises(InvalidBlock) as info:
            chain.add_block(bad, now=NOW)
        assert info.value.reason == "bad-cb-height" and not chain.node(bad.hash).valid


# --------------------------------------------------------------------------- damage at start-up

@pytest.fixture
def forked(tmp_path):
    """A chain with a two-block side branch, closed, and its path."""
    path = tmp_path / "forked.sqlite"
    with Chain.create(path, params("flat")) as chain:
        base = grow(chain, chain.tip_hash, 3, 11, b"main")
        grow(chain, base[0].hash, 2, 13, b"side")
        assert len(chain.tips()) == 2
    return path


def _edit(path, sql, *args):
    conn = sqlite3.connect(path)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def _refused_by_every_writer(path, match):
    with pytest.raises(ChainError, match=match):
        Chain.open(path)
    proc = subprocess.run([sys.executable, "-m", "miner", "mine", "--backend", "ref", "--blocks", "1",
                           "--chain", str(path), "--quiet"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 1 and match.split(".*")[0] in proc.stderr, proc.stderr


def test_an_active_block_stored_at_the_wrong_height_is_refused_at_start(forked):
    _edit(forked, "UPDATE blocks SET height = 7 WHERE hash = (SELECT hash FROM active WHERE height = 2)")
    _refused_by_every_writer(forked, "block 2 is stored with height 7")
    with Chain.open(forked, readonly=True) as chain, pytest.raises(InvalidBlock):
        chain.verify(now=NOW)


def test_a_side_block_with_a_wrong_height_or_hash_is_refused_at_start(forked, tmp_path):
    other = tmp_path / "other.sqlite"
    shutil.copy(forked, other)
    side_tip = "SELECT hash FROM blocks WHERE hash NOT IN (SELECT hash FROM active) ORDER BY seq DESC LIMIT 1"
    _edit(forked, f"UPDATE blocks SET height = 40 WHERE hash = ({side_tip})")
    _refused_by_every_writer(forked, "side block .* is stored with height 40")
    _edit(other, f"UPDATE blocks SET hash = ? WHERE hash = ({side_tip})", b"\x42" * 32)
    _refused_by_every_writer(other, "side block .*: stored hash does not match its header")


# --------------------------------------------------------------------------- two miners, one file

def test_two_miners_on_one_file_never_find_the_same_block(tmp_path):
    """Regtest's target: half of all nonces are hits, so two processes hashing the same headers
    would report the same blocks (before: 11 of 15 blocks reported by both)."""
    path = tmp_path / "shared.sqlite"
    build_easy_chain(path, 1).close()
    cmd = [sys.executable, "-m", "miner", "mine", "--backend", "ref", "--blocks", "15", "--chain", str(path),
           "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    found = []
    for (out, err), p in zip(outs, procs):
        assert p.returncode == 0, err
        found.append({e["hash_hex"] for e in map(json.loads, out.splitlines()) if e["event"] == "block"})
    assert len(found[0]) == len(found[1]) == 15
    assert found[0].isdisjoint(found[1])
    with Chain.open(path, readonly=True) as chain:
        chain.verify()
        stored = {bytes(h)[::-1].hex() for (h,) in chain.store.conn.execute("SELECT hash FROM blocks")}
    assert found[0] | found[1] <= stored


# --------------------------------------------------------------------------- a read-only file

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to take another user's identity for a moment")
def test_a_chain_file_its_user_cannot_write_is_refused_before_mining_or_serving(tmp_path):
    """A chain file without write permission in a folder that has it: SQLite opens such a file
    read-only without a word, and the first block stored failed (a node answered every block
    with -1). A writer now refuses it at once; readers still read it. Root ignores permission
    bits, so the test takes the identity of `nobody` for the open."""
    folder = Path(tempfile.mkdtemp(prefix="ro-chain-", dir="/tmp"))
    try:
        folder.chmod(0o777)
        path = folder / "chain.sqlite"
        build_easy_chain(path, 2).close()
        path.chmod(0o444)
        before = path.read_bytes()
        os.seteuid(65534)
        try:
            with pytest.raises(ChainError, match="cannot write to the chain file"):
                Chain.open(path)
            with Chain.open(path, readonly=True) as chain:
                assert chain.verify(now=NOW) == 2
        finally:
            os.seteuid(0)
        assert path.read_bytes() == before
    finally:
        shutil.rmtree(folder)


# --------------------------------------------------------------------------- a clock behind the chain

def test_a_clock_behind_the_chain_is_named_as_such_by_mine_and_verify(tmp_path):
    """Blocks mined while the clock was three hours ahead, read after it was put right: the chain
    is not invalid, this computer's clock is behind it, and every command says so and by how
    much (before: 'the chain is refused' and 'chain INVALID')."""
    path = tmp_path / "ahead.sqlite"
    build_easy_chain(path, 5, genesis_time=int(time.time()) + 3 * 3600).close()
    for args in (["mine", "--backend", "ref", "--blocks", "1"], ["chain", "verify"]):
        proc = subprocess.run([sys.executable, "-m", "miner", *args, "--chain", str(path)], capture_output=True,
                              text=True, timeout=60, check=False)
        assert proc.returncode == 1, proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert "ahead of this computer's clock" in line and "s ahead" in line, line
        assert "INVALID" not in line and "refused" not in line, line
    proc = subprocess.run([sys.executable, "-m", "miner", "chain", "verify", "--json", "--chain", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    report = json.loads(proc.stdout)
    assert report["clock_behind"] is True and report["reason"] == "time-too-new"
