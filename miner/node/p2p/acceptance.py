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
from miner.chain.outcome import BlockOutcome, BlockResult
from miner.node.p2p.blame import punishment
from miner.primitives.block import Block

MAX_AHEAD = 288  # Core's MIN_BLOCKS_TO_KEEP: how far above the tip an unrequested block may be


@dataclass(frozen=True)
class Unrequested:
    store: bool
    reason: str  # why not stored ("duplicate", "less-work", "too-far-ahead", "unknown-parent"), or invalid
    tip_work: int = 0
    tip_height: int = 0
    refused: BlockOutcome | None = None  # the chain's verdict when the block breaks a rule

    @property
    def invalid(self) -> bool:
        return self.refused is not None

    @property
    def known(self) -> bool:
        """Stored already (valid or marked invalid): nothing to drop."""
        return self.reason == "duplicate"

    @property
    def parent_missing(self) -> bool:
        return self.reason == "unknown-parent"


def judge_unrequested(chain: Chain, block: Block, now: int) -> Unrequested:
    tip_work, tip_height = chain.chainwork, chain.height
    outcome = chain.judge(block, now)
    if outcome.result in (BlockResult.DUPLICATE, BlockResult.CACHED_INVALID):
        return Unrequested(False, "duplicate", tip_work, tip_height)
    if outcome.result is BlockResult.MISSING_PREV:
        return Unrequested(False, "unknown-parent", tip_work, tip_height)
    if outcome.result is not BlockResult.VALID:
        # too far ahead may be fine later: no blame, as for a header
        return Unrequested(False, outcome.reason, tip_work, tip_height,
                           refused=outcome if punishment(outcome) is not None else None)
    parent = chain.node(block.header.prev_hash)
    assert parent is not None  # judged VALID: its parent is stored
    if parent.chainwork + block_work(block.header.bits) <= tip_work:
        return Unrequested(False, "less-work", tip_work, tip_height)
    if parent.height + 1 > tip_height + MAX_AHEAD:
        return Unrequested(False, "too-far-ahead", tip_work, tip_height)
    return Unrequested(True, "", tip_work, tip_height)
