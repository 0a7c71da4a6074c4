"""The SQLite chain: append-time validation, verify naming the bad block, and file safety."""

import hashlib
import shutil
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from miner.bench.chain_verify import GENESIS_TIME, build_easy_chain

from miner.chain.chain import Chain
from miner.consensus.checks import median_time_past
from miner.consensus.params import preset
from miner.errors import ChainError, InvalidBlock, InvalidInput
from miner.mining.sources.local import LocalChainSource
from miner.mining.work import Solution
from miner.primitives.block import Block
from miner.primitives.coinbase import coinbase_template
from miner.primitives.compact import bits_to_target
from miner.primitives.header import BlockHeader


def test_easy_chain_verifies_and_reopens(easy_chain, tmp_path):
    assert easy_chain.height == 12
    assert easy_chain.verify(now=GENESIS_TIME + 100) == 12
    path = easy_chain.path
    tip = easy_chain.tip_hash
    easy_chain.close()
    with Chain.open(path) as again:
        assert again.height == 12 and again.tip_hash == tip
        assert again.block(5).header.prev_hash == again.block(4).hash


def _next(chain, clock):
    source = LocalChainSource(chain, clock=lambda: clock)
    job = source.job()
    return source, job


def _solve(job, extranonce=0, want_valid=True):
    """First nonce whose hash meets (or, if not want_valid, misses) the job's target."""
    work = job.work(extranonce)
    for nonce in range(10_000):
        if work.check(nonce) == want_valid:
            return nonce
    raise AssertionError("no nonce found")


def test_append_accepts_valid_block(easy_chain):
    source, job = _next(easy_chain, GENESIS_TIME + 50)
    height = source.append(Solution(job, 0, _solve(job)))
    assert height == 13 == easy_chain.height


@pytest.mark.parametrize("damage,match", [
    ("prev", "parent 1111111111111111 is not known"),
    ("bits", "demands"),
    ("pow", "proof of work fails"),
    ("time_mtp", "median time past"),
    ("time_future", "future"),
    ("merkle", "merkle root"),
])
def test_append_rejects_each_rule(easy_chain, damage, match):
    now = GENESIS_TIME + 50
    _, job = _next(easy_chain, now)
    txs = job.block(0, 0).raw_txs
    header = job.header(0, _solve(job))
    if damage == "prev":
        header = BlockHeader(header.version, b"\x11" * 32, header.merkle_root, header.time, header.bits, 0)
    elif damage == "bits":
        header = BlockHeader(header.version, header.prev_hash, header.merkle_root, header.time, 0x1F7FFFFF, 0)
    elif damage == "pow":
        header = job.header(0, _solve(job, want_valid=False))
    elif damage == "time_mtp":
        header = BlockHeader(header.version, header.prev_hash, header.merkle_root,
                             median_time_past(easy_chain.times, easy_chain.height + 1), header.bits, 0)
    elif damage == "time_future":
        header = BlockHeader(header.version, header.prev_hash, header.merkle_root, now + 7201, header.bits, 0)
    elif damage == "merkle":
        txs = [coinbase_template(99, b"other").build(0)]
    if damage in ("prev", "bits", "time_mtp", "time_future"):
        # Re-solve the changed header so only the rule under test is broken: its hash meets its
        # own bits (Core checks that first and would answer high-hash).
        target = min(2**255, bits_to_target(header.bits))
        header = next(header.with_nonce(n) for n in range(100_000) if header.with_nonce(n).meets_target(target))
    before = easy_chain.height
    with pytest.raises(InvalidBlock, match=match) as info:
        easy_chain.append(Block.from_raw(header, txs), now=now)
    assert info.value.height == (None if damage == "prev" else before + 1)  # no parent: no height
    assert easy_chain.height == before
    assert easy_chain.verify(now=now) == before


def test_create_refuses_existing_file(easy_chain):
    with pytest.raises(InvalidInput, match="already exists"):
        Chain.create(easy_chain.path, preset("regtest", GENESIS_TIME))


def _file_digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_foreign_files_are_refused_untouched(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database\n" * 100)
    other_db = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other_db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    for path in (text, other_db):
        before = _file_digest(path)
        with pytest.raises(ChainError, match="not a miner chain file"):
            Chain.open(path)
        assert _file_digest(path) == before
    with pytest.raises(InvalidInput, match="no such chain file"):
        Chain.open(tmp_path / "missing.sqlite")


def test_truncated_file_is_refused(easy_chain, tmp_path):
    easy_chain.close()
    damaged = tmp_path / "damaged.sqlite"
    data = easy_chain.path.read_bytes()
    damaged.write_bytes(data[: len(data) // 3])
    before = _file_digest(damaged)
    with pytest.raises(ChainError), Chain.open(damaged) as c:
        c.verify()
    assert _file_digest(damaged) == before


# ---------------------------------------------------------------- any flipped byte is named

@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("pristine") / "chain.sqlite"
    chain = build_easy_chain(path, 8)
    chain.close()
    return path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(0, 8), column=st.sampled_from(["header", "body"]), pos=st.integers(0, 10**6),
       xor=st.integers(1, 255))
def test_flipping_any_byte_names_that_block(pristine, tmp_path, height, column, pos, xor):
    path = tmp_path / f"flip-{height}-{column}-{pos}-{xor}.sqlite"
    shutil.copy(pristine, path)
    conn = sqlite3.connect(path)
    blob = bytearray(conn.execute(f"SELECT {column} FROM blocks WHERE height=?", (height,)).fetchone()[0])
    blob[pos % len(blob)] ^= xor
    conn.execute(f"UPDATE blocks SET {column}=? WHERE height=?", (bytes(blob), height))
    conn.commit()
    conn.close()
    with Chain.open(path, readonly=True) as chain:
        with pytest.raises(InvalidBlock) as info:
            chain.verify(now=GENESIS_TIME + 100)
    assert info.value.height == height
    assert f"block {height}" in str(info.value)


def test_missing_block_is_named(pristine, tmp_path):
    path = tmp_path / "gap.sqlite"
    shutil.copy(pristine, path)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM blocks WHERE height=4")
    conn.commit()
    conn.close()
    with pytest.raises(ChainError, match="block 4 is missing"):
        Chain.open(path)  # a writer refuses it outright
    with Chain.open(path, readonly=True) as chain:
        with pytest.raises(InvalidBlock, match="block 4: missing") as info:
            chain.verify(now=GENESIS_TIME + 100)
        assert info.value.height == 4
        with pytest.raises(ChainError, match="block 4 is missing"):
            chain.append(chain.tip(), [b"x"])
