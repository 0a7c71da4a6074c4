"""One `BlockOutcome` from the chain, mapped once per face: a peer's punishment (Core's
MaybePunishNodeForBlock), a Stratum answer, a submitblock answer (BIP 22), and Core's reasons
to results."""

from __future__ import annotations

import pytest

from miner.chain.outcome import BlockOutcome, BlockResult, result_of
from miner.node.p2p.blame import header_is_invalid, punishment
from miner.node.rpc.mining import bip22_answer
from miner.node.stratum.session import block_answer
from miner.primitives import stratum as sp

H = bytes(range(32))
R = BlockResult

# result, reason, submitblock's answer, punished, Stratum error code (None: accepted)
TABLE = [
    (R.CONNECTED, "", None, False, None),
    (R.SIDE, "", "inconclusive", False, None),
    (R.DUPLICATE, "", "duplicate", False, sp.DUPLICATE),
    (R.CONSENSUS, "bad-cb-height", "bad-cb-height", True, sp.OTHER),
    (R.INVALID_HEADER, "high-hash", "high-hash", True, sp.OTHER),
    (R.MUTATED, "bad-txnmrklroot", "bad-txnmrklroot", True, sp.OTHER),
    (R.CACHED_INVALID, "duplicate-invalid", "duplicate-invalid", True, sp.OTHER),
    (R.MISSING_PREV, "prev-blk-not-found", "prev-blk-not-found", False, sp.OTHER),
    (R.INVALID_PREV, "bad-prevblk", "bad-prevblk", True, sp.OTHER),
    (R.TIME_FUTURE, "time-too-new", "time-too-new", False, sp.OTHER),
]


@pytest.mark.parametrize("result,reason,bip22,punished,stratum_code", TABLE)
def test_each_face_answers_an_outcome_in_one_place(result, reason, bip22, punished, stratum_code):
    outcome = BlockOutcome(result, H, 7, reason, "why")
    assert bip22_answer(outcome) == bip22
    why = punishment(outcome)
    assert (why is not None) is punished
    if punished:
        assert why == f"invalid block {H[::-1].hex()[:16]}: {reason}"
        assert header_is_invalid(outcome) is (result is not R.MUTATED)
    answer = block_answer(outcome)
    assert (answer.code if answer is not None else None) == stratum_code
    if stratum_code == sp.OTHER:
        assert answer.message == f"Block refused: {reason}"


def test_the_file_failing_is_no_fault_of_the_sender():
    assert punishment(BlockOutcome(R.NOT_STORED, H)) is None


@pytest.mark.parametrize("reason,result", [
    ("time-too-new", R.TIME_FUTURE), ("bad-prevblk", R.INVALID_PREV), ("bad-witness-nonce-size", R.MUTATED),
    ("high-hash", R.INVALID_HEADER), ("bad-diffbits", R.INVALID_HEADER), ("time-too-old", R.INVALID_HEADER),
    ("bad-version(0x00000001)", R.INVALID_HEADER), ("bad-cb-height", R.CONSENSUS), ("bad-blk-weight", R.CONSENSUS),
])
def test_core_reasons_map_to_core_results(reason, result):
    assert result_of(reason) is result
