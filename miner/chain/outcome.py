"""What the chain made of a block, as one value from the chain to every face.

`BlockResult` follows Bitcoin Core's `BlockValidationResult` for the refusals (consensus, a
header that fails its own rules, a possibly mutated body, a block known invalid, a missing or
invalid parent, a time too far ahead) and adds the three ways a block ends up stored, a
judgement without storing, and the file failing. `BlockOutcome` carries it with Core's reject
reason, so each face maps it in one place: a peer's punishment (`node.p2p.blame`), a Stratum
answer (`node.stratum.session.block_answer`), a submitblock answer (`node.rpc.mining.bip22_answer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from miner.chain.index import TipChange
from miner.consensus.checks import MUTATED
from miner.errors import InvalidBlock


class BlockResult(Enum):
    CONNECTED = "connected"  # stored valid and now the active tip (a reorganisation included)
    SIDE = "side"  # stored valid on a side branch (BIP 22's "inconclusive")
    DUPLICATE = "duplicate"  # stored valid before: nothing done
    VALID = "valid"  # valid by every rule; judged, not stored (`Chain.judge`)
    CONSENSUS = "consensus"  # breaks a consensus rule of the block (kept marked, or refused)
    INVALID_HEADER = "invalid-header"  # the header fails its own rules: work, bits, time, version
    MUTATED = "mutated"  # the body may be a valid block's altered in transit: its header stays good
    CACHED_INVALID = "cached-invalid"  # stored as invalid before
    MISSING_PREV = "missing-prev"  # its parent is not stored: deliver the parent first
    INVALID_PREV = "invalid-prev"  # it descends from an invalid block
    TIME_FUTURE = "time-future"  # too far ahead of our clock: may be valid later
    NOT_STORED = "not-stored"  # the chain file failed (disk full): no verdict on the block


_STORED = frozenset({BlockResult.CONNECTED, BlockResult.SIDE, BlockResult.DUPLICATE})
_HEADER_REASONS = frozenset({"high-hash", "bad-diffbits", "time-too-old"})


def result_of(reason: str) -> BlockResult:
    """The result a rule's reject reason stands for (Core's mapping of its reasons)."""
    if reason == "time-too-new":
        return BlockResult.TIME_FUTURE
    if reason == "bad-prevblk":
        return BlockResult.INVALID_PREV
    if reason == "duplicate-invalid":
        return BlockResult.CACHED_INVALID
    if reason in MUTATED:
        return BlockResult.MUTATED
    if reason in _HEADER_REASONS or reason.startswith("bad-version"):
        return BlockResult.INVALID_HEADER
    return BlockResult.CONSENSUS


@dataclass(frozen=True)
class BlockOutcome:
    """One block's outcome: `reason` is Core's reject reason ("" when stored valid or judged
    valid), `message` the one line a log shows, `change` the switch of the active tip it made."""

    result: BlockResult
    hash: bytes
    height: int | None = None
    reason: str = ""
    message: str = ""
    change: TipChange | None = None
    active: bool = False  # on the active chain once done

    @property
    def stored(self) -> bool:
        """Stored valid, now or before."""
        return self.result in _STORED

    @classmethod
    def refused(cls, exc: InvalidBlock, block_hash: bytes) -> BlockOutcome:
        """A block a rule refused, as the rule's exception names it."""
        return cls(result_of(exc.reason), block_hash, exc.height, exc.reason, str(exc))

    def error(self) -> InvalidBlock:
        """The outcome of a block not stored valid as the exception `Chain.add_block` raises."""
        return InvalidBlock(self.message, self.height, self.reason)
