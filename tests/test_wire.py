"""Bitcoin's wire format (miner/primitives: transaction, block) against python-bitcoinlib, an
independent implementation: random transactions, legacy and segwit, serialize the same, hash to
the same txid and wtxid, and hostile counts fail cleanly without allocating."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miner.consensus.checks import check_transaction
from miner.primitives.block import Block
from miner.primitives.serialize import DecodeError, varint
from miner.primitives.transaction import Transaction, strip_witness, txid

pytest.importorskip("bitcoin")
from bitcoin.core import (
    CheckTransaction,
    CheckTransactionError,
    CMutableTransaction,
    COutPoint,
    CTransaction,
    CTxIn,
    CTxInWitness,
    CTxOut,
    CTxWitness,
)
from bitcoin.core.script import CScript, CScriptWitness

scripts = st.binary(max_size=80)
inputs = st.lists(st.tuples(st.binary(min_size=32, max_size=32) | st.just(bytes(32)),
                            st.integers(0, 2**32 - 1) | st.sampled_from([0, 2**32 - 1]), scripts,
                            st.integers(0, 2**32 - 1)), min_size=1, max_size=4)
outputs = st.lists(st.tuples(st.integers(0, 21_000_000 * 10**8), scripts), min_size=1, max_size=4)
stacks = st.lists(st.binary(max_size=80), max_size=3)


@settings(max_examples=200, deadline=None)
@given(inputs, outputs, st.booleans(), st.data(), st.integers(0, 2**32 - 1), st.integers(1, 2))
def test_transactions_agree_with_python_bitcoinlib(ins, outs, segwit, data, locktime, version):
    witness = None
    if segwit:
        witness = CTxWitness([CTxInWitness(CScriptWitness(data.draw(stacks))) for _ in ins])
    tx = CMutableTransaction([CTxIn(COutPoint(h, n), CScript(s), q) for h, n, s, q in ins],
                             [CTxOut(v, CScript(s)) for v, s in outs], locktime, version, witness)
    raw = tx.serialize()
    ours = Transaction.parse(raw)
    assert ours.serialize() == raw and ours.raw == raw
    assert ours.txid == tx.GetTxid() == txid(raw)
    assert ours.wtxid == CTransaction.deserialize(raw).GetHash()
    assert ours.has_witness == tx.has_witness()
    assert strip_witness(raw) == CTransaction(tx.vin, tx.vout, tx.nLockTime, tx.nVersion).serialize()
    assert [o.value for o in ours.outputs] == [v for v, _ in outs]
    try:  # Core's CheckTransaction, as bitcoinlib implements it, must agree with ours
        CheckTransaction(CTransaction.from_tx(tx))
        theirs = None
    except CheckTransactionError as exc:
        theirs = str(exc)
    assert (check_transaction(ours) is None) == (theirs is None), (check_transaction(ours), theirs)


def test_hostile_counts_fail_cleanly():
    # An input count of 2^64-1 in a few bytes: refused before anything is allocated.
    with pytest.raises(DecodeError, match="larger than the data left"):
        Transaction.parse(b"\x01\x00\x00\x00" + b"\xff" + b"\xff" * 8 + b"\x00" * 10)
    with pytest.raises(DecodeError):
        Block.parse(bytes(80) + varint(10**6))
    with pytest.raises(DecodeError, match="after the transaction"):
        Transaction.parse(CMutableTransaction([CTxIn()], [CTxOut(1, CScript())]).serialize() + b"\x00")
    with pytest.raises(DecodeError, match="superfluous witness"):
        tx = CMutableTransaction([CTxIn()], [CTxOut(1, CScript())]).serialize()
        Transaction.parse(tx[:4] + b"\x00\x01" + tx[4:-4] + b"\x00" + tx[-4:])
