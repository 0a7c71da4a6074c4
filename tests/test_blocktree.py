"""The chain as a block tree: most-work selection, reorganisations, invalid side blocks, crash
safety and the `chain tips|show|info|verify` views of a forked chain."""

import itertools
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import TESTS, program
from support.blockmaker import NOW, expected_tip, grow, make_block, params, solve, spend

from miner.chain.chain import Chain, StaleBlock, UnknownParent
from miner.errors import InvalidBlock
from miner.primitives.block import Block
from miner.primitives.coinbase import coinbase_template
from miner.primitives.header import BlockHeader
from miner.primitives.merkle import merkle_root
from miner.primitives.transaction import txid


def _interleavings(a: list, b: list):
    """Every order of delivering a and b with each list's own order kept (parents first)."""
    n = len(a) + len(b)
    for slots in itertools.combinations(range(n), len(a)):
        ia, ib, order = iter(a), iter(b), []
        for i in range(n):
            order.append(next(ia) if i in slots else next(ib))
        yield order


def _copy_of(base: Path, path: Path) -> Path:
    """A private copy of the fixture's base chain file, for one test to change."""
    shutil.copy(base, path)
    return path


def _delivered(base: Path, path: Path, blocks) -> Path:
    """A copy of `base` at `path` with `blocks` delivered in order."""
    _copy_of(base, path)
    with Chain.open(path) as chain:
        for block in blocks:
            chain.add_block(block, now=NOW)
    return path


@pytest.fixture
def forked(tmp_path):
    """A base chain of 2 blocks, and two branches from its tip made in a scratch copy:
    A of 3 blocks, B of 2 blocks (flat difficulty: A has more work), B2 equal in length to A."""
    base = tmp_path / "base.sqlite"
    with Chain.create(base, params("flat")) as chain:
        grow(chain, chain.tip_hash, 2, 10, b"base")
    scratch = tmp_path / "scratch.sqlite"
    shutil.copy(base, scratch)
    with Chain.open(scratch) as chain:
        fork = chain.tip_hash
        a = grow(chain, fork, 3, 10, b"A")
        b = grow(chain, fork, 2, 11, b"B")
        b2 = grow(chain, fork, 3, 12, b"C")
        genesis = chain.tree.active[0]
    return base, genesis, a, b, b2


def test_every_delivery_order_ends_on_the_most_work_tip(forked, tmp_path):
    base, genesis, a, b, _ = forked
    bits = params("flat").genesis_bits
    ends = set()
    for n, order in enumerate(_interleavings(a, b)):
        path = _copy_of(base, tmp_path / f"order{n}.sqlite")
        with Chain.open(path) as chain:
            start = list(chain.tree.active)
            for i, block in enumerate(order):
                chain.add_block(block, now=NOW)
                want = expected_tip(start[-1], bits, order[:i + 1])
                # expected_tip counts from the fork; the base below it is shared by all.
                assert chain.tip_hash == want, f"order {n}, after {i + 1} blocks"
            ends.add(chain.tip_hash)
            assert chain.verify(now=NOW) == chain.height
    assert ends == {a[-1].hash}  # A has more work whatever the order
    assert n + 1 == 10


def test_equal_work_keeps_the_first_seen(forked, tmp_path):
    base, _, a, _, c = forked
    for first, second in ((a, c), (c, a)):
        path = _copy_of(base, tmp_path / f"tie-{first[0].hash.hex()[:8]}.sqlite")
        with Chain.open(path) as chain:
            for block in first + second:
                chain.add_block(block, now=NOW)
            assert chain.tip_hash == first[-1].hash
            assert chain.tree.tip.chainwork == chain.node(second[-1].hash).chainwork
        with Chain.open(path) as chain:  # and the tie-break survives a reopen
            assert chain.tip_hash == first[-1].hash


def test_a_child_before_its_parent_is_refused_then_accepted(forked, tmp_path):
    base, _, a, _, _ = forked
    path = _copy_of(base, tmp_path / "orphan.sqlite")
    with Chain.open(path) as chain:
        with pytest.raises(UnknownParent, match="not known; deliver the parent first"):
            chain.add_block(a[1], now=NOW)
        assert chain.node(a[1].hash) is None
        for block in a:
            chain.add_block(block, now=NOW)
        assert chain.tip_hash == a[-1].hash


def test_a_reorg_is_reported_by_the_add_that_caused_it(forked, tmp_path):
    """Each add says how it moved the tip (`BlockOutcome.change`), which the node's service reads
    to update its mempool and tell its faces."""
    base, _, a, b, _ = forked
    path = _copy_of(base, tmp_path / "listen.sqlite")
    with Chain.open(path) as chain:
        changes = [r.change for r in (chain.add_block(block, now=NOW) for block in b + a) if r.change is not None]
    assert [c.connected for c in changes[:2]] == [(b[0].hash,), (b[1].hash,)]
    # a[0], a[1]: equal or less work than B, no change; a[2] takes over.
    reorg = changes[-1]
    assert len(changes) == 3
    assert reorg.disconnected == (b[1].hash, b[0].hash)
    assert reorg.connected == tuple(m.hash for m in a) and reorg.tip == a[-1].hash


def test_a_miner_block_that_lost_the_race_is_kept_as_a_side_block(forked, tmp_path):
    base, _, a, b, _ = forked
    path = _copy_of(base, tmp_path / "race.sqlite")
    with Chain.open(path) as chain:
        chain.append(a[0], now=NOW)
        with pytest.raises(StaleBlock, match="another block at this height"):
            chain.append(b[0], now=NOW)
        assert chain.tip_hash == a[0].hash and chain.node(b[0].hash).valid


@pytest.mark.parametrize("rule", ["windowed", "asert"])
def test_reorg_across_a_retarget_boundary_checks_each_branch_against_its_own_ancestors(tmp_path, rule):
    path = tmp_path / f"{rule}.sqlite"
    with Chain.create(path, params(rule)) as chain:
        fork = grow(chain, chain.tip_hash, 2, 10, b"base")[-1].hash
        fast = grow(chain, fork, 4, 1, b"fast")  # ahead of schedule: harder after the boundary
        slow = grow(chain, fork, 5, 40, b"slow")  # behind: easier
        # Height 4 is the windowed rule's boundary; ASERT moves at every block.
        assert fast[1].header.bits != slow[1].header.bits
        work_fast = chain.node(fast[-1].hash).chainwork
        work_slow = chain.node(slow[-1].hash).chainwork
        assert chain.tip_hash == (fast[-1].hash if work_fast >= work_slow else slow[-1].hash)
        # The slow branch's block 5, re-parented onto the fast branch's block 4, carries bits
        # that only the slow branch demands: refused there, with the rule named.
        demanded_on_fast = chain.rule.next_bits(5, *chain.tree.history(chain.node(fast[1].hash)))
        assert demanded_on_fast != slow[2].header.bits
        moved = make_block(chain, fast[1].hash, 40, b"moved", bits=slow[2].header.bits)
        with pytest.raises(InvalidBlock, match="demands"):
            chain.add_block(moved, now=NOW)
        # ... and the same bits on the slow branch are what it demands.
        ok = make_block(chain, slow[1].hash, 40, b"ok", bits=slow[2].header.bits)
        chain.add_block(ok, now=NOW)
        assert chain.verify(now=NOW) == chain.height


def test_an_invalid_side_block_is_kept_marked_and_its_children_refused(forked, tmp_path):
    base, _, a, b, _ = forked
    path = _copy_of(base, tmp_path / "invalid.sqlite")
    with Chain.open(path) as chain:
        for block in a:
            chain.add_block(block, now=NOW)
        active = list(chain.tree.active)
        # A header that breaks a header rule never enters the index (as in Core): not stored.
        old = make_block(chain, b[0].parent, -10**5, b"old")
        with pytest.raises(InvalidBlock, match="median time past") as info:
            chain.add_block(old, now=NOW)
        assert info.value.reason == "time-too-old" and chain.node(old.hash) is None

        # A valid header with real work whose body breaks a rule (here BIP 34: its coinbase
        # names another height): kept, marked invalid, and answered as such when it comes again.
        bad = make_block(chain, b[0].parent, 11, b"bad", coinbase_height=99)
        with pytest.raises(InvalidBlock, match="block height") as info:
            chain.add_block(bad, now=NOW)
        assert info.value.reason == "bad-cb-height"
        assert "block height" in chain.node(bad.hash).status
        with pytest.raises(InvalidBlock, match="already stored as invalid") as info:
            chain.add_block(bad, now=NOW)
        assert info.value.reason == "duplicate-invalid"
        # A child of the invalid block is refused and names it; nothing of it is stored.
        child = make_block(chain, bad.hash, 11, b"child")
        with pytest.raises(InvalidBlock, match=r"descends from invalid block 3"):
            chain.add_block(child, now=NOW)
        assert chain.node(child.hash) is None
        assert chain.tree.active == active
        # A block without real proof of work is refused and not stored at all.
        cheap = make_block(chain, b[0].parent, 11, b"cheap")
        header = cheap.header
        while header.meets_target(1 << 250):
            header = header.with_nonce(header.nonce + 1)
        with pytest.raises(InvalidBlock, match="proof of work"):
            chain.add_block(Block(header, cheap.txs), now=NOW)
        assert chain.node(header.hash()) is None
        statuses = {t.hash: t.status for t in chain.tips()}
        assert statuses[bad.hash] == "invalid" and statuses[a[-1].hash] == "active"
    with Chain.open(path) as chain:  # the mark survives a reopen, and the chain verifies
        assert chain.verify(now=NOW) == chain.height
        assert not chain.node(bad.hash).valid


def test_verify_names_a_damaged_side_block_by_height_and_hash(forked, tmp_path):
    import sqlite3
    base, _, a, b, _ = forked
    path = _delivered(base, tmp_path / "damaged.sqlite", a + b)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE blocks SET body = X'0100' WHERE hash = ?", (b[1].hash,))
    conn.commit()
    conn.close()
    proc = subprocess.run([sys.executable, "-m", "miner", "chain", "verify", "--chain", str(path), "--json"],
                          capture_output=True, text=True)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["bad_height"] == 4
    assert b[1].hash[::-1].hex()[:16] in report["error"]


def test_cli_tips_show_and_info_on_a_forked_chain(forked, tmp_path):
    base, _, a, b, _ = forked
    path = _delivered(base, tmp_path / "cli.sqlite", a + b)

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "miner", "chain", *args, "--chain", str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    tips = json.loads(run("tips", "--json"))
    assert tips == [
        {"height": 5, "hash": a[-1].hash[::-1].hex(), "branchlen": 0, "status": "active"},
        {"height": 4, "hash": b[-1].hash[::-1].hex(), "branchlen": 2, "status": "valid-fork"},
    ]
    assert "valid-fork" in run("tips")
    shown = json.loads(run("show", b[0].hash[::-1].hex(), "--json"))
    assert shown["height"] == 3 and shown["active"] is False
    assert json.loads(run("show", "3", "--json"))["hash"] == a[0].hash[::-1].hex()
    info = json.loads(run("info", "--json"))
    assert info["side_branches"] == 1 and int(info["chainwork"], 16) == Chain.open(path, readonly=True).chainwork


# ---------------------------------------------------------------- property: random trees

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 30)), min_size=1, max_size=14),
       priorities=st.lists(st.floats(0, 1), min_size=14, max_size=14))
def test_random_trees_in_random_order_select_the_most_work_tip(tmp_path_factory, shape, priorities):
    """Blocks i = 1..n each on a random earlier block (0 is genesis), `dt` seconds after it, under
    ASERT (bits, and so work, differ per block); delivered in a random parents-first order."""
    tmp = tmp_path_factory.mktemp("tree")
    scratch, target = tmp / "scratch.sqlite", tmp / "target.sqlite"
    p = params("asert", halflife=20)
    with Chain.create(scratch, p) as chain:
        shutil.copy(scratch, target)
        made = [None]
        ids = [chain.tip_hash]
        for i, (parent_pick, dt) in enumerate(shape):
            parent = ids[parent_pick % len(ids)]
            block = make_block(chain, parent, dt, b"r%d" % i)
            chain.add_block(block, now=NOW)
            made.append(block)
            ids.append(block.hash)
        genesis = ids[0]
    parent_of = {m.hash: m.parent for m in made[1:]}
    pending = list(range(1, len(made)))
    delivered, have = [], {genesis}
    while pending:
        ready = [i for i in pending if parent_of[made[i].hash] in have]
        pick = min(ready, key=lambda i: (priorities[i - 1], i))
        pending.remove(pick)
        delivered.append(made[pick])
        have.add(made[pick].hash)
    with Chain.open(target) as chain:
        for block in delivered:
            chain.add_block(block, now=NOW)
        assert chain.tip_hash == expected_tip(genesis, p.genesis_bits, delivered)
        assert chain.verify(now=NOW) == chain.height


# ---------------------------------------------------------------- crash safety

def test_sigkill_while_reorganising_leaves_one_of_the_two_valid_states(tmp_path):
    """A worker keeps extending whichever of two branches is not active, so every block it adds
    is a reorganisation; killed at random moments, the file must always open, verify, and have
    the most-work branch active."""
    path = tmp_path / "reorg.sqlite"
    with Chain.create(path, params("flat")) as chain:
        fork = chain.tip_hash
        grow(chain, fork, 1, 10, b"X")
        grow(chain, fork, 1, 11, b"Y")
    rng = random.Random(13)
    kills = 0
    heights = []
    for trial in range(22):
        proc = subprocess.Popen(program("reorg_worker", str(path), str(trial)), cwd=TESTS,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            kills += proc.returncode == -signal.SIGKILL
        finally:
            proc.kill()
            proc.wait()
        with Chain.open(path) as chain:  # the writer's start-up check passes
            assert chain.verify(now=NOW) == chain.height
            tips = [t for t in chain.tips() if t.status != "invalid"]
            best = max(chain.node(t.hash).chainwork for t in tips)
            assert chain.tree.tip.chainwork == best
            heights.append(chain.height)
    assert kills >= 20
    assert heights[-1] > heights[0]  # the worker did reorganise between kills


def test_a_block_with_a_mutated_body_is_refused_unmarked_and_the_real_one_then_accepted(forked, tmp_path):
    """Core's BLOCK_MUTATED: a genuine header with the wrong transactions (a wrong merkle root, a
    transaction repeated) may be a valid block damaged in transit, so it is never marked invalid."""
    base, _, a, _, _ = forked
    path = _copy_of(base, tmp_path / "mutated.sqlite")
    with Chain.open(path) as chain:
        real = make_block(chain, chain.tip_hash, 11, b"real")
        for txs, reason in (([coinbase_template(99, b"other").build(0)], "bad-txnmrklroot"),):
            with pytest.raises(InvalidBlock, match="merkle root") as info:
                chain.add_block(Block.from_raw(real.header, txs), now=NOW)
            assert info.value.reason == reason
            assert chain.node(real.hash) is None
        chain.add_block(real, now=NOW)
        assert chain.tip_hash == real.hash


def test_a_repeated_transaction_is_refused_as_a_mutation(forked, tmp_path):
    """CVE-2012-2459: [cb, a, b, b] has the merkle root of [cb, a, b]; the copy is refused,
    unmarked, and the real block is accepted after it."""
    base, _, _, _, _ = forked
    path = _copy_of(base, tmp_path / "dup.sqlite")
    with Chain.open(path) as chain:
        node = chain.node(chain.tip_hash)
        cb = coinbase_template(node.height + 1, b"dup").build(0)
        t1, t2 = (spend(b"tx%d" % i) for i in range(2))
        root = merkle_root([txid(cb), txid(t1), txid(t2)])
        assert root == merkle_root([txid(cb), txid(t1), txid(t2), txid(t2)])
        header = solve(BlockHeader(0x20000000, node.hash, root, node.time + 11,
                                   chain.next_bits(), 0))
        with pytest.raises(InvalidBlock, match="appears twice") as info:
            chain.add_block(Block.from_raw(header, [cb, t1, t2, t2]), now=NOW)
        assert info.value.reason == "bad-txns-duplicate" and chain.node(header.hash()) is None
        chain.add_block(Block.from_raw(header, [cb, t1, t2]), now=NOW)  # the real block
        assert chain.tip_hash == header.hash()
