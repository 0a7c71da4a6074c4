"""The block-body and transaction rules in this process, each at the value where it starts to
refuse and the one just inside it, with Core's reason (consensus/tx_check.cpp CheckTransaction,
validation.cpp CheckBlock and ContextualCheckBlock).

`tests/test_failing_side.py` sends the same blocks to a live node; here the rule itself is called,
so a mutation tool (README, "Tests") can see which tests reach it."""

from __future__ import annotations

import pytest
from test_failing_side import CASES, _coinbase, _committed, _witness_tx

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
    return Transaction.parse(tx.serialize()) if inputs else Transaction(*[getattr(tx, f) for f in (
        "version", "inputs", "outputs", "witnesses", "locktime")], tx.serialize())


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


def _refusal(txs: list[Transaction], height: int = HEIGHT) -> str | None:
    try:
        check_body(Block(HEADER, tuple(txs)), height)
    except InvalidBlock as exc:
        assert exc.height == height
        return exc.reason
    return None


@pytest.mark.parametrize("reason", list(CASES))
def test_each_body_rule_refuses_here_as_the_node_does(reason):
    assert _refusal(CASES[reason](HEIGHT)) == reason


def test_what_the_body_rules_accept():
    witness = _witness_tx((b"\x01",))
    assert _refusal([_coinbase(HEIGHT)]) is None
    assert _refusal([_coinbase(HEIGHT), _tx([SPEND], [1])]) is None
    assert _refusal([_committed(HEIGHT, [witness]), witness]) is None  # committed, 32-byte reserved value
    assert _refusal([_committed(HEIGHT, [])]) is None  # a commitment with no other witness


def test_the_block_level_refusals():
    assert _refusal([]) == "bad-blk-length"
    assert _refusal([_coinbase(HEIGHT), _tx([SPEND], [MAX_MONEY + 1])]) == "bad-txns-vout-toolarge"  # each tx
    assert _refusal([_coinbase(HEIGHT), _coinbase(HEIGHT, tag=b"2"), _tx([SPEND], [1])]) == "bad-cb-multiple"
    assert _refusal([_coinbase(HEIGHT - 1)]) == "bad-cb-height"
    assert _refusal([_coinbase(HEIGHT)], height=HEIGHT + 1) == "bad-cb-height"
    witness = _witness_tx((b"\x01",))
    assert _refusal([_committed(HEIGHT, [witness], reserved=bytes(33)), witness]) == "bad-witness-nonce-size"
    assert _refusal([_coinbase(HEIGHT, witness=(bytes(32), bytes(32))), witness]) == "unexpected-witness"


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
    from blockmaker import params, solve

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
