"""BIP 141's witness commitment: the root over wtxids a coinbase output commits to, and the
witness reserved value a committing coinbase carries."""

from __future__ import annotations

from collections.abc import Sequence

from miner.primitives.hashes import sha256d
from miner.primitives.merkle import merkle_root
from miner.primitives.transaction import Transaction

# The commitment output: OP_RETURN, push 36, the 4-byte header, the 32-byte commitment.
WITNESS_COMMITMENT_HEADER = bytes.fromhex("6a24aa21a9ed")
WITNESS_RESERVED_VALUE = bytes(32)


def witness_root(txs: Sequence[Transaction]) -> bytes:
    """Merkle root over a block's wtxids, the coinbase's (first) counted as 32 zero bytes."""
    return witness_root_of([t.wtxid for t in txs[1:]])


def witness_root_of(wtxids: Sequence[bytes]) -> bytes:
    """The same root over the wtxids of the transactions after the coinbase (a template's)."""
    return merkle_root([bytes(32), *wtxids])


def witness_commitment(root: bytes, reserved: bytes = WITNESS_RESERVED_VALUE) -> bytes:
    return sha256d(root + reserved)


def commitment_script(commitment: bytes) -> bytes:
    return WITNESS_COMMITMENT_HEADER + commitment


def find_commitment(coinbase: Transaction) -> bytes | None:
    """The commitment of the last output that carries one, as Core reads it."""
    found = None
    for out in coinbase.outputs:
        s = out.script_pubkey
        if len(s) >= 38 and s[:6] == WITNESS_COMMITMENT_HEADER:
            found = s[6:38]
    return found


def with_reserved_value(coinbase: Transaction) -> Transaction:
    """The coinbase re-serialized with the witness reserved value as its witness, which a block
    carrying a witness commitment must have (BIP 141)."""
    tx = Transaction(coinbase.version, coinbase.inputs, coinbase.outputs, ((WITNESS_RESERVED_VALUE,),),
                     coinbase.locktime, b"")
    return Transaction.parse(tx.serialize())


def add_coinbase_witness(legacy_coinbase: bytes) -> bytes:
    """`with_reserved_value` for a coinbase given as bytes."""
    return with_reserved_value(Transaction.parse(legacy_coinbase)).raw
