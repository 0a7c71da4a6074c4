"""The block-body and transaction rules in this process, each at the value where it starts to
refuse and the one just inside it, with Core's reason (consensus/tx_check.cpp CheckTransaction,
validation.cpp CheckBlock and ContextualCheckBlock).

`tests/test_failing_side.py` sends the same blocks to a live node; here the rule itself is called,
so a mutation tool (docs/tests.md) can see which tests reach it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.block_bodies import CASES, coinbase, committed, witness_tx

from miner.consensus.checks import (
    MAX_BLOCK_WEIGHT,
    MAX_MONEY,
    check_body,
    check_transaction,
    halving_interval,
    subsidy,
)
from miner.errors import InvalidBlock
from miner.primitives.block import Block
from miner.primitives.header import BlockHeader
from miner.primitives.transaction import NULL_PREVOUT, Transaction, TxIn, TxOut

HEIGHT = 7
HEADER = BlockHeader(0x20000000, bytes(32), bytes(32), 0, 0x207FFFFF, 0)  # the body rules never read it
P2WPKH = bytes.fromhex("0014") + bytes(20)


def _tx(inputs: list[tuple[bytes, int, bytes]], values: list[int], script: bytes = P2WPKH) -> Transaction:
    tx = Transaction(2, tuple(TxIn(h, i, s, 0xFFFFFFFF) for h, i, s in inputs),
                     tuple(TxOut(v, script) for v in values), (), 0, b"")
    # with raw filled in, as parsed (no input reads as the segwit marker: such a one stays unparsed)
    return Transaction.parse(tx.serialize()) if inputs else replace(tx, raw=tx.serialize())


SPEND = (b"\x11" * 32, 0, b"")
OTHER = (b"\x22" * 32, 1, b"")


def _sized(base_size: int) -> Transaction:
    """A spend whose serialization without witness is exactly `base_size` bytes."""
    script_len = base_size - len(_tx([SPEND], [1], b"").serialize())
    for _ in range(3):  # the script's length prefix grows with it
        tx = _tx([SPEND], [1], b"\x51" * script_len)
        script_len += base_size - tx.base_size
    assert tx.base_size == base_size
    return tx


def _coinbase_script(length: int) -> Transaction:
    return _tx([(NULL_PREVOUT[0], NULL_PREVOUT[1], b"\x01" * length)], [0])


LIMIT = MAX_BLOCK_WEIGHT // 4  # a transaction's base size, times the witness scale, within the block weight

TRANSACTIONS = [  # (what, transaction, Core's reason or None)
    ("no input", _tx([], [1]), "bad-txns-vin-empty"),
    ("no output", _tx([SPEND], []), "bad-txns-vout-empty"),
    ("base size at the limit", _sized(LIMIT), None),
    ("one byte over", _sized(LIMIT + 1), "bad-txns-oversize"),
    ("a zero output", _tx([SPEND], [0]), None),
    ("an output of -1", _tx([SPEND], [5, -1]), "bad-txns-vout-negative"),
    ("an output of every coin", _tx([SPEND], [MAX_MONEY]), None),
    ("one more", _tx([SPEND], [MAX_MONEY + 1]), "bad-txns-vout-toolarge"),
    ("outputs summing to every coin", _tx([SPEND], [MAX_MONEY - 1, 1]), None),
    ("summing to one more", _tx([SPEND], [MAX_MONEY, 1]), "bad-txns-txouttotal-toolarge"),
    ("two inputs", _tx([SPEND, OTHER], [1]), None),
    ("the same input twice", _tx([SPEND, SPEND], [1]), "bad-txns-inputs-duplicate"),
    ("a coinbase script of 1 byte", _coinbase_script(1), "bad-cb-length"),
    ("of 2", _coinbase_script(2), None),
    ("of 100", _coinbase_script(100), None),
    ("of 101", _coinbase_script(101), "bad-cb-length"),
    ("a null prevout beside another input", _tx([SPEND, (*NULL_PREVOUT, b"")], [1]), "bad-txns-prevout-null"),
]


@pytest.mark.parametrize("what, tx, reason", TRANSACTIONS, ids=[t[0] for t in TRANSACTIONS])
def test_each_transaction_rule_at_its_boundary(what, tx, reason):
    assert check_transaction(tx) == reason


# What each refusal says after "block N: " (the reason is Core's; the sentence is for people).
MESSAGES = {
    "bad-blk-length": "size limits failed",
    "bad-cb-missing": "first transaction is not a coinbase",
    "bad-cb-multiple": "more than one coinbase",
    "bad-cb-height": "coinbase does not start with the block height (BIP 34)",
    "bad-witness-nonce-size": "coinbase witness is not one 32-byte reserved value",
    "bad-witness-merkle-match": "witness commitment does not match the witnesses",
    "unexpected-witness": "witness data without a witness commitment",
    "bad-blk-weight": "weight limit failed",
}


def _refusal(txs: list[Transaction], height: int = HEIGHT) -> str | None:
    try:
        check_body(Block(HEADER, tuple(txs)), height)
    except InvalidBlock as exc:
        assert exc.height == height
        said = str(exc)
        if exc.reason in MESSAGES:
            assert said == f"block {height}: {MESSAGES[exc.reason]}", said
        else:  # a transaction's own rule
            bad = next(t for t in txs if check_transaction(t) == exc.reason)
            assert said == f"block {height}: transaction {bad.txid[::-1].hex()} is malformed ({exc.reason})", said
        return exc.reason
    return None


@pytest.mark.parametrize("reason", list(CASES))
def test_each_body_rule_refuses_here_as_the_node_does(reason):
    assert _refusal(CASES[reason](HEIGHT)) == reason


def test_what_the_body_rules_accept():
    witness = witness_tx((b"\x01",))
    assert _refusal([coinbase(HEIGHT)]) is None
    assert _refusal([coinbase(HEIGHT), _tx([SPEND], [1])]) is None
    assert _refusal([committed(HEIGHT, [witness]), witness]) is None  # committed, 32-byte reserved value
    assert _refusal([committed(HEIGHT, [])]) is None  # a commitment with no other witness


def test_the_block_level_refusals():
    assert _refusal([]) == "bad-blk-length"
    assert _refusal([coinbase(HEIGHT), _tx([SPEND], [MAX_MONEY + 1])]) == "bad-txns-vout-toolarge"  # each tx
    assert _refusal([coinbase(HEIGHT), coinbase(HEIGHT, tag=b"2"), _tx([SPEND], [1])]) == "bad-cb-multiple"
    assert _refusal([coinbase(HEIGHT - 1)]) == "bad-cb-height"
    assert _refusal([coinbase(HEIGHT)], height=HEIGHT + 1) == "bad-cb-height"
    witness = witness_tx((b"\x01",))
    assert _refusal([committed(HEIGHT, [witness], reserved=bytes(33)), witness]) == "bad-witness-nonce-size"
    assert _refusal([coinbase(HEIGHT, witness=(bytes(32), bytes(32))), witness]) == "unexpected-witness"


def test_subsidy_halves_on_schedule():
    """Bitcoin's schedule: 50 BTC, 25 from block 210,000, 3.125 from 840,000 (the 2024 halving),
    nothing from the 64th halving; regtest's interval of 150 for the local chains."""
    coin = 10**8
    mainnet = halving_interval("mainnet")
    assert mainnet == 210_000 and halving_interval("local") == halving_interval("regtest") == 150
    assert [subsidy(h, mainnet) for h in (0, 209_999, 210_000, 419_999, 420_000, 840_000)] == \
        [50 * coin, 50 * coin, 25 * coin, 25 * coin, 1_250_000_000, 312_500_000]
    assert subsidy(32 * mainnet, mainnet) == 1 and subsidy(33 * mainnet, mainnet) == 0
    assert [subsidy(h, 150) for h in (149, 150, 300)] == [50 * coin, 25 * coin, 1_250_000_000]
    assert subsidy(64 * 150, 150) == 0 and subsidy(10**9, 150) == 0


# --------------------------------------------------------------------------- whole blocks on a chain


def _first_block(mined: bool, dt: int = 10):
    """Block 1 on an easy ASERT chain (its rule reads the times), mined or surely not."""
    from support.blockmaker import params, solve

    from miner.primitives.coinbase import coinbase_template
    from miner.primitives.compact import bits_to_target
    from miner.primitives.merkle import merkle_root
    chain_params = params("asert")
    genesis = chain_params.genesis_header()
    times, bits = [genesis.time], [genesis.bits]
    demanded = chain_params.retarget_rule().next_bits(1, times, bits)
    cb = Transaction.parse(coinbase_template(1, b"rules").build(0))
    header = BlockHeader(0x20000000, genesis.hash(), merkle_root([cb.txid]), genesis.time + dt, demanded, 0)
    if mined:
        header = solve(header)
    else:
        target = bits_to_target(demanded)
        header = next(header.with_nonce(n) for n in range(10_000) if not header.with_nonce(n).meets_target(target))
    return chain_params, Block(header, (cb,)), genesis.hash(), times, bits


def test_a_proposal_is_every_rule_but_the_proof_of_work():
    from miner.consensus.checks import check_block
    chain_params, block, parent, times, bits = _first_block(mined=False)
    rule = chain_params.retarget_rule()
    assert check_block(chain_params, rule, 1, block, parent, times, bits, None, check_pow=False) == block.hash
    with pytest.raises(InvalidBlock) as info:
        check_block(chain_params, rule, 1, block, parent, times, bits, None)
    assert info.value.reason == "high-hash"


def test_an_invalid_block_is_kept_only_if_it_was_not_cheap_and_not_too_far_ahead():
    """worth_keeping: the hash must meet the bits the branch demands; a time more than
    max_future ahead of the clock is refused without being marked (it may become valid)."""
    from miner.consensus.checks import worth_keeping
    for mined in (True, False):
        chain_params, block, _, times, bits = _first_block(mined)
        header, now = block.header, block.header.time - chain_params.max_future
        rule = chain_params.retarget_rule()
        assert worth_keeping(chain_params, rule, 1, header, block.hash, times, bits, now) is mined
        assert worth_keeping(chain_params, rule, 1, header, block.hash, times, bits, now - 1) is False


def _filled_block(base_size: int) -> list[Transaction]:
    """A coinbase and one spend making a block of exactly `base_size` bytes with no witness."""
    cb = coinbase(HEIGHT)
    empty = Block(HEADER, (cb, _sized(1000)))
    return [cb, _sized(1000 + base_size - empty.base_size)]


def test_the_size_and_weight_limits_at_their_edge():
    """4,000,000 weight units, a block without witnesses weighing four per byte: exactly
    1,000,000 bytes is a block, one more is not (Core: bad-blk-length before anything else)."""
    at_limit = _filled_block(LIMIT)
    block = Block(HEADER, tuple(at_limit))
    assert block.base_size == LIMIT and block.weight == MAX_BLOCK_WEIGHT
    assert _refusal(at_limit) is None
    assert _refusal(_filled_block(LIMIT + 1)) == "bad-blk-length"
    # two transactions each within the limit, together over it
    assert _refusal([coinbase(HEIGHT), _sized(600_000), _sized(600_000)]) == "bad-blk-length"


def test_the_commitment_and_its_reserved_value():
    from miner.primitives.transaction import TxOut
    from miner.primitives.witness import commitment_script, witness_commitment, witness_root
    witness = witness_tx((b"\x01",))
    reserved = b"\x07" * 32  # any 32 bytes: the commitment is made with them
    draft = [coinbase(HEIGHT), witness]
    value = witness_commitment(witness_root(draft), reserved)
    committed = coinbase(HEIGHT, (TxOut(0, commitment_script(value)),), witness=(reserved,))
    assert _refusal([committed, witness]) is None
    no_witness = coinbase(HEIGHT, (TxOut(0, commitment_script(value)),))  # a commitment, no reserved value
    assert _refusal([no_witness, witness]) == "bad-witness-nonce-size"


def test_median_time_past_is_the_middle_of_the_last_eleven():
    from miner.consensus.checks import median_time_past
    times = [50, 10, 90, 30, 70, 20, 100, 60, 40, 80, 0, 5, 1000]
    assert median_time_past(times, 11) == 50  # of 0..100 (times[0:11])
    assert median_time_past(times, 13) == 60  # times[2:13]
    assert median_time_past(times, 3) == 50  # fewer than 11 before: the middle of those
    assert median_time_past(times, 1) == 50


# --------------------------------------------------------------------------- the header and the commitments


def test_each_header_rule_with_its_reason_and_words():
    from miner.consensus.checks import check_header
    chain_params, block, parent, times, bits = _first_block(mined=True)
    rule = chain_params.retarget_rule()
    header, block_hash = block.header, block.hash

    def refusal(**change) -> tuple[str, int, str] | None:
        args = dict(params=chain_params, rule=rule, height=1, header=header, block_hash=block_hash,
                    parent_hash=parent, times=times, bits=bits, now=header.time)
        args.update(change)
        try:
            check_header(**args)
        except InvalidBlock as exc:
            return exc.reason, exc.height, str(exc)
        return None
    assert refusal() is None
    assert refusal(parent_hash=bytes(32)) == ("bad-prevblk", 1, "block 1: previous hash does not link to block 0")
    unmined = _first_block(mined=False)[1]
    assert refusal(header=unmined.header, block_hash=unmined.hash)[:2] == ("high-hash", 1)  # checked by default
    assert refusal(header=unmined.header, block_hash=unmined.hash, check_pow=False) is None
    wrong_bits = replace(header, bits=header.bits - 1)
    reason, height, said = refusal(header=wrong_bits, block_hash=wrong_bits.hash(), check_pow=False)
    assert (reason, height) == ("bad-diffbits", 1) and said.endswith(f"demands 0x{header.bits:08x}")
    ahead = chain_params.max_future
    assert refusal(now=header.time - ahead) is None  # exactly as far ahead as allowed
    reason, height, said = refusal(now=header.time - ahead - 1)
    assert (reason, height) == ("time-too-new", 1) and f"{ahead + 1} s ahead of this computer's clock" in said
    old = replace(header, version=3)
    reason, height, said = refusal(header=old, block_hash=old.hash(), check_pow=False)
    assert (reason, height) == ("bad-version(0x00000003)", 1) and "version 3 is below 4" in said


def test_the_commitment_rules_with_their_reasons_and_words():
    from miner.consensus.checks import check_commitments
    from miner.primitives.merkle import merkle_root

    def commitment_refusal(txids):
        try:
            check_commitments(4, merkle_root(txids) if txids else bytes(32), txids)
        except InvalidBlock as exc:
            return exc.reason, exc.height, str(exc)
        return None
    assert commitment_refusal([]) == ("bad-blk-length", 4, "block 4: no transactions")
    a, b = bytes(range(32)), bytes(range(1, 33))
    assert commitment_refusal([a, b]) is None
    assert commitment_refusal([a, b, b]) == ("bad-txns-duplicate", 4, "block 4: a transaction appears twice")


def test_a_merkle_root_of_one_is_that_id_and_of_none_is_refused():
    from miner.primitives.merkle import merkle_root
    one = bytes(range(32))
    assert merkle_root([one]) == one  # Bitcoin's genesis: its root is its coinbase's id
    with pytest.raises(InvalidBlock) as info:
        merkle_root([])
    assert str(info.value) == "a block needs at least one transaction"
