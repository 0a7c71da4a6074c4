"""The block index in memory (chain/index.py), block by block: which tip it picks, what it reports
as tips and histories, and the views it hands to the retarget rules. The block-tree tests mine
and store real blocks through it; here its answers are checked one field at a time."""

from __future__ import annotations

import hashlib

import pytest

from miner.chain.index import GENESIS_PARENT, BlockTree, BranchView, ChainTip, block_work

BITS = 0x207FFFFF
HARD = 0x1F7FFFFF  # 256x the work of BITS


def _h(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


def _add(tree: BlockTree, tag: str, parent: str | None, time: int, bits: int = BITS, status: str = ""):
    node = tree.make_node(_h(tag), _h(parent) if parent else GENESIS_PARENT, time, bits, status)
    tree.add(node)
    if parent and tree.better_than_tip(node) and tree.invalid_ancestor(node) is None:  # as Chain does
        tree.reorg_to(node)
    return node


@pytest.fixture
def tree() -> BlockTree:
    """g - a1 - a2 - a3 (active); g - b1 - b2 (valid fork); a1 - c2 (a fork of one, at height 2);
    a2 - x3 (invalid) - y4 (valid child of an invalid block)."""
    t = BlockTree()
    _add(t, "g", None, 100)
    for i, (tag, parent) in enumerate([("a1", "g"), ("a2", "a1"), ("a3", "a2"), ("b1", "g"), ("b2", "b1"),
                                       ("c2", "a1")]):
        _add(t, tag, parent, 110 + i)
    _add(t, "x3", "a2", 120, status="bad-cb-height")
    _add(t, "y4", "x3", 121)
    return t


def test_the_active_chain_and_the_tips_as_getchaintips_reports_them(tree):
    assert tree.active == [_h(t) for t in ("g", "a1", "a2", "a3")]
    tips = tree.tips()
    assert tips[0] == ChainTip(3, _h("a3"), 0, "active")
    # then by height, highest first; equal heights by hash
    rest = sorted([ChainTip(4, _h("y4"), 2, "invalid"), ChainTip(2, _h("b2"), 2, "valid-fork"),
                   ChainTip(2, _h("c2"), 1, "valid-fork")], key=lambda r: (-r.height, r.hash))
    assert tips[1:] == rest
    assert [r.height for r in tips[1:]] == [4, 2, 2]


def test_equal_work_keeps_the_first_seen_and_a_block_never_beats_itself(tree):
    assert not tree.better_than_tip(tree.tip)
    b3 = _add(tree, "b3", "b2", 130)  # as much work as a3, seen later
    assert tree.tip.hash == _h("a3") and not tree.better_than_tip(b3)
    b4 = _add(tree, "b4", "b3", 131)  # more work: it wins
    assert tree.tip.hash == _h("b4") and tree.tip.height == 4 == b4.height


def test_a_reorg_reports_what_it_took_off_and_put_on(tree):
    b3 = tree.make_node(_h("b3"), _h("b2"), 130, HARD)  # one block of 256x the work
    tree.add(b3)
    assert tree.best_tip() is b3
    change = tree.reorg_to(b3)
    assert change.disconnected == (_h("a3"), _h("a2"), _h("a1"))
    assert change.connected == (_h("b1"), _h("b2"), _h("b3"))
    assert (change.tip, change.height) == (_h("b3"), 3)
    assert tree.tips()[0] == ChainTip(3, _h("b3"), 0, "active")


def test_the_nearest_invalid_ancestor(tree):
    x3, y4 = tree.nodes[_h("x3")], tree.nodes[_h("y4")]
    assert tree.invalid_ancestor(x3) is x3 and tree.invalid_ancestor(y4) is x3
    assert tree.invalid_ancestor(tree.nodes[_h("b2")]) is None
    assert tree.invalid_ancestor(tree.tip) is None and tree.invalid_ancestor(tree.nodes[_h("g")]) is None


def test_histories_are_what_a_child_is_judged_against(tree):
    times, bits = tree.history(tree.tip)
    assert times is tree.times and bits is tree.bits  # the tip's: the active lists, not a copy
    a2 = tree.nodes[_h("a2")]
    times, _ = tree.history(a2)  # an active block below the tip: its own ancestors only
    assert list(times) == [100, 110, 111] and len(times) == 3
    times, bits = tree.history(tree.nodes[_h("b2")])
    assert list(times) == [100, 113, 114] and list(bits) == [BITS] * 3
    assert list(tree.history(tree.nodes[_h("y4")])[0]) == [100, 110, 111, 120, 121]


def test_a_branch_view_reads_like_a_list():
    view = BranchView([10, 11, 12, 13], 1, [20, 21])
    assert len(view) == 4 and list(view) == [10, 11, 20, 21]
    assert view[-1] == 21 and view[-4] == 10 and view[1:3] == [11, 20] and view[::-1] == [21, 20, 11, 10]
    for bad in (4, -5):
        with pytest.raises(IndexError):
            view[bad]


def test_the_node_index_holds_active_and_side_blocks(tree):
    index = tree.nodes
    assert _h("a2") in index and _h("b1") in index and _h("nope") not in index
    assert len(index) == 9 and bool(index)
    assert {n.hash for n in index.values()} == {_h(t) for t in ("g", "a1", "a2", "a3", "b1", "b2", "c2", "x3", "y4")}
    assert len(list(index.values())) == 9
    empty = BlockTree()
    assert not empty.nodes and len(empty.nodes) == 0
    _add(empty, "g", None, 100)
    assert empty.nodes and len(empty.nodes) == 1


def test_arrival_order_survives_discard_and_extend():
    t = BlockTree()
    _add(t, "g", None, 100)
    assert t.next_seq == 1
    side = t.make_node(_h("s1"), _h("g"), 101, BITS)
    t.add(side)
    t.add(t.make_node(_h("s2"), _h("g"), 101, BITS, seq=5))
    assert t.next_seq == 6
    t.discard(t.make_node(_h("s1"), _h("g"), 101, BITS, seq=1))  # another object with that hash: kept
    assert _h("s1") in t.nodes and t.next_seq == 6
    t.discard(side)  # the store did not commit it: forgotten, its number given back
    assert _h("s1") not in t.nodes and t.next_seq == side.seq == 1
    t.extend(_h("e1"), 102, BITS, seq=7)
    assert t.next_seq == 8 and t.tip.hash == _h("e1") and t.tip.chainwork == 2 * block_work(BITS)


def test_work_of_bits_that_mean_no_target_is_zero():
    """Core's GetBlockProof: a negative, overflowing or zero target proves no work."""
    from miner.primitives.compact import work
    assert block_work(0x04923456) == 0  # negative (sign bit set)
    assert block_work(0xFF123456) == 0  # overflow
    assert block_work(0x00000000) == 0 and block_work(0x01003456) == 0  # zero targets
    assert block_work(0x01010000) == work(1) == 1 << 255  # target 1: the most work one block can prove
    assert block_work(0x1D00FFFF) == 0x100010001 == block_work(0x1D00FFFF)  # again, from the cache


def test_active_nodes_lookups_and_loading(tree):
    a2 = tree.active_node(2)
    assert (a2.hash, a2.parent, a2.height, a2.status, a2.valid) == (_h("a2"), _h("a1"), 2, "", True)
    assert tree.active_node(0).parent == GENESIS_PARENT
    marker = object()
    assert tree.nodes.get(_h("nope"), marker) is marker and tree.nodes.get(_h("nope")) is None
    with pytest.raises(KeyError) as info:
        tree.nodes[_h("nope")]
    assert info.value.args == (_h("nope"),)
    loaded = BlockTree()
    loaded.load_active([_h("g"), _h("a1")], [100, 110], [BITS, HARD], [0, 4])
    assert loaded.works == [block_work(BITS), block_work(BITS) + block_work(HARD)]
    assert loaded.next_seq == 5 and loaded.tip.hash == _h("a1")


def test_only_a_valid_genesis_starts_an_empty_tree():
    t = BlockTree()
    t.add(t.make_node(_h("bad-g"), GENESIS_PARENT, 100, BITS, status="bad-cb-length"))
    assert t.active == [] and _h("bad-g") in t.nodes.side
