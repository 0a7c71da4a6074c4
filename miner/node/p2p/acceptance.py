"""Whether a block nobody asked for is worth storing (Core's AcceptBlock, for `fRequested` false).

A peer may send blocks we did not ask for. Before, every one whose parent we had was stored, so
a peer could fill the disk with valid blocks on a fork from genesis that can never become the
tip (100 blocks of 1 MB: 127 MB in 7 s). As in Core, an unrequested block is stored only if its
branch has more work than our tip (a new tip a peer pushes to us) and it is not more than
`MAX_AHEAD` blocks above the tip; anything else is dropped without blame. It is judged first,
as Core runs CheckBlock before the work test, so an invalid block still costs its sender the
connection. Blocks we asked for are not judged here: we ask only for the blocks on the way to a
header with more work than our tip.

Runs on the chain thread (`NodeService.on_chain`).
"""

from __future__ import annotations

from dataclasses import dataclass

from miner.chain.chain import Chain
from miner.chain.index import block_work
from miner.consensus.checks import check_block
from miner.errors import InvalidBlock
from miner.primitives.block import Block

MAX_AHEAD = 288  # Core's MIN_BLOCKS_TO_KEEP: how far above the tip an unrequested block may be


@dataclass(frozen=True)
class Unrequested:
    store: bool
    reason: str  # why not stored ("duplicate", "less-work", "too-far-ahead", "unknown-parent"), or invalid
    invalid: bool = False
    tip_work: int = 0
    tip_height: int = 0


def judge_unrequested(chain: Chain, block: Block, now: int) -> Unrequested:
    tree = chain.tree
    tip = tree.tip
    if block.hash in tree.nodes:
        return Unrequested(False, "duplicate", tip_work=tip.chainwork, tip_height=tip.height)
    parent = tree.nodes.get(block.header.prev_hash)
    if parent is None:
        return Unrequested(False, "unknown-parent", tip_work=tip.chainwork, tip_height=tip.height)
    height = parent.height + 1
    if tree.invalid_ancestor(parent) is not None:
        return Unrequested(False, "bad-prevblk", invalid=True, tip_work=tip.chainwork, tip_height=tip.height)
    times, bits = tree.history(parent)
    try:
        check_block(chain.params, chain.rule, height, block, parent.hash, times, bits, now)
    except InvalidBlock as exc:
        if exc.reason == "time-too-new":  # may be fine later: no blame, as for a header
            return Unrequested(False, exc.reason, tip_work=tip.chainwork, tip_height=tip.height)
        return Unrequested(False, exc.reason, invalid=True, tip_work=tip.chainwork, tip_height=tip.height)
    if parent.chainwork + block_work(block.header.bits) <= tip.chainwork:
        return Unrequested(False, "less-work", tip_work=tip.chainwork, tip_height=tip.height)
    if height > tip.height + MAX_AHEAD:
        return Unrequested(False, "too-far-ahead", tip_work=tip.chainwork, tip_height=tip.height)
    return Unrequested(True, "", tip_work=tip.chainwork, tip_height=tip.height)
