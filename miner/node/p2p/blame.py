"""What a block costs the peer that sent it: the one place an outcome becomes a punishment
(Bitcoin Core's MaybePunishNodeForBlock).

A block that breaks a rule, builds on an invalid block, or is known invalid costs its sender the
connection. One too far ahead of our clock (it may be valid later) or one our own file failed to
store costs nothing, nor does a missing parent: sync fetches the parent (Core punishes that
lightly; asking is how headers-first sync goes on). A mutated body is punished, but says nothing
against its header: the real block with that header may still come.
"""

from __future__ import annotations

from miner.chain.outcome import BlockOutcome, BlockResult
from miner.primitives.hashes import display_hex

_NO_FAULT = frozenset({BlockResult.CONNECTED, BlockResult.SIDE, BlockResult.DUPLICATE, BlockResult.VALID,
                       BlockResult.MISSING_PREV, BlockResult.TIME_FUTURE, BlockResult.NOT_STORED})


def punishment(outcome: BlockOutcome) -> str | None:
    """Why the sender of this block is punished, or None when it is not."""
    if outcome.result in _NO_FAULT:
        return None
    return f"invalid block {display_hex(outcome.hash)[:16]}: {outcome.reason}"


def header_is_invalid(outcome: BlockOutcome) -> bool:
    """Whether a punished block's header is known bad from now on (not for a mutated body)."""
    return outcome.result is not BlockResult.MUTATED
