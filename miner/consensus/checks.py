"""Every rule a block and a transaction must pass, in Bitcoin Core's order, with Core's reasons.

One place for whoever judges a block: the miner appending its own, the node's `submitblock` and
proposals, a future peer, and `verify` re-reading the file. The rules come in three groups, as in
Core: the header against its ancestors (`check_header`: link, proof of work, bits, times), the
body against the header (`check_commitments`: merkle root, repeated transactions) and the body's
own structure (`check_body`: coinbase, BIP 34 height, transactions, witness commitment, weight).
A failure raises `InvalidBlock` with Core's reject reason, which BIP 22 answers with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from miner.consensus.params import ChainParams
from miner.consensus.pow import proof_of_work_error
from miner.consensus.retarget import RetargetRule
from miner.errors import InvalidBlock
from miner.primitives.block import Block
from miner.primitives.coinbase import MAX_COINBASE_SCRIPT, script_number
from miner.primitives.hashes import display_hex
from miner.primitives.merkle import merkle_root
from miner.primitives.transaction import NULL_PREVOUT, WITNESS_SCALE, Transaction
from miner.primitives.witness import find_commitment, witness_commitment, witness_root

MTP_SPAN = 11  # blocks in Bitcoin's median-time-past
# BIP 34 (height in the coinbase), 66 (strict DER) and 65 (CHECKLOCKTIMEVERIFY) are active from
# height 1 on every chain here, as on Core's regtest: a block must be version 4 or more.
MIN_VERSION = 4
MAX_BLOCK_WEIGHT = 4_000_000  # Core's consensus limit
COIN = 10**8
MAX_MONEY = 21_000_000 * COIN

# Reject reasons of blocks that may be a valid block mutated in transit (Core's BLOCK_MUTATED):
# the header can be genuine, so the block is refused without being marked invalid, and the real
# block with the same header is still accepted when it arrives.
MUTATED = frozenset({"bad-txnmrklroot", "bad-txns-duplicate", "bad-witness-merkle-match",
                     "bad-witness-nonce-size", "unexpected-witness"})
# A header that fails its own checks never enters Core's block index: it is refused, not stored.
HEADER_RULES = frozenset({"high-hash", "bad-diffbits", "time-too-old", "time-too-new", "bad-prevblk"})
# Core's CheckBlock: rules that need no other block. A block failing one of them is never stored
# either, however much work its header carries: only what fails a rule of its place in the
# chain (ContextualCheckBlock: the BIP 34 height, the weight) is kept, marked invalid.
CONTEXT_FREE = frozenset({"bad-blk-length", "bad-cb-missing", "bad-cb-multiple", "bad-cb-length",
                          "bad-txns-vin-empty", "bad-txns-vout-empty", "bad-txns-oversize",
                          "bad-txns-vout-negative", "bad-txns-vout-toolarge", "bad-txns-txouttotal-toolarge",
                          "bad-txns-inputs-duplicate", "bad-txns-prevout-null"})


def worth_keeping(params: ChainParams, rule: RetargetRule, height: int, header: HeaderFields,
                  block_hash: bytes, times: Sequence[int], bits: Sequence[int], now: int) -> bool:
    """Whether an invalid block is stored (marked, so its descendants are refused at once): only
    if it could not be made cheaply, its hash meeting the bits its branch demands. A block too
    far in the future is refused but not marked: it may become valid later."""
    if header.time > now + params.max_future:
        return False
    demanded = rule.next_bits(height, times, bits)
    pow_hash = params.pow_algorithm.pow_hash(header, block_hash)
    return proof_of_work_error(pow_hash, demanded, params.pow_limit) is None


def never_stored(reason: str) -> bool:
    """Whether a block refused for `reason` is refused without being stored: a header that
    fails its own rules, a body that may be mutated, or a body that fails a context-free rule."""
    return (reason in HEADER_RULES or reason in MUTATED or reason in CONTEXT_FREE
            or reason.startswith("bad-version"))


def median_time_past(times: Sequence[int], height: int) -> int:
    """Median of the (up to) 11 block times below `height`, as Bitcoin Core computes it."""
    window = sorted(times[max(0, height - MTP_SPAN):height])
    return window[len(window) // 2]


def halving_interval(chain_name: str) -> int:
    """Blocks between subsidy halvings: Bitcoin's 210,000, or regtest's 150 for local chains."""
    return 210_000 if chain_name == "mainnet" else 150


def subsidy(height: int, interval: int) -> int:
    halvings = height // interval
    return 0 if halvings >= 64 else (50 * COIN) >> halvings


# --------------------------------------------------------------------------- the header

class HeaderFields(Protocol):
    """What the header rules read: a `BlockHeader`, or a stored header read without building one."""

    @property
    def version(self) -> int: ...
    @property
    def prev_hash(self) -> bytes: ...
    @property
    def time(self) -> int: ...
    @property
    def bits(self) -> int: ...
    def serialize(self) -> bytes: ...


def check_header(params: ChainParams, rule: RetargetRule, height: int, header: HeaderFields,
                 block_hash: bytes, parent_hash: bytes, times: Sequence[int], bits: Sequence[int],
                 now: int | None, check_pow: bool = True) -> None:
    """The header against its ancestors (their times and bits by height, ending at the parent):
    its link, its own proof of work, the bits the retarget rule demands, a time above the median
    time past and at most `max_future` ahead of `now`. `check_pow` False: every rule but the
    proof of work, for a block proposal (BIP 23) that is not mined yet."""
    if header.prev_hash != parent_hash:
        raise InvalidBlock(f"block {height}: previous hash does not link to block {height - 1}",
                           height, "bad-prevblk")
    if check_pow:
        pow_hash = params.pow_algorithm.pow_hash(header, block_hash)
        pow_error = proof_of_work_error(pow_hash, header.bits, params.pow_limit)
        if pow_error:
            raise InvalidBlock(f"block {height}: proof of work fails: {pow_error}", height, "high-hash")
    expected_bits = rule.next_bits(height, times, bits)
    if header.bits != expected_bits:
        raise InvalidBlock(f"block {height}: bits 0x{header.bits:08x} but the {rule.name} rule "
                           f"demands 0x{expected_bits:08x}", height, "bad-diffbits")
    mtp = median_time_past(times, height)
    if header.time <= mtp:
        raise InvalidBlock(f"block {height}: time {header.time} is not after the median time "
                           f"past {mtp}", height, "time-too-old")
    if now is not None and header.time > now + params.max_future:
        raise InvalidBlock(f"block {height}: time {header.time} is more than {params.max_future} s in "
                           f"the future: {header.time - now} s ahead of this computer's clock", height,
                           "time-too-new")
    if header.version < MIN_VERSION:
        version = header.version & 0xFFFFFFFF
        raise InvalidBlock(f"block {height}: version {header.version} is below {MIN_VERSION}, which BIP "
                           f"34, 66 and 65 require", height, f"bad-version(0x{version:08x})")


def check_commitments(height: int, merkle: bytes, txids: Sequence[bytes]) -> None:
    """The body against the header: at least one transaction, the merkle root of their ids, and
    no repeated transaction (CVE-2012-2459: a repeated one can leave the root unchanged)."""
    if not txids:
        raise InvalidBlock(f"block {height}: no transactions", height, "bad-blk-length")
    if merkle_root(txids) != merkle:
        raise InvalidBlock(f"block {height}: merkle root does not match its transactions", height,
                           "bad-txnmrklroot")
    if len(set(txids)) != len(txids):
        raise InvalidBlock(f"block {height}: a transaction appears twice", height, "bad-txns-duplicate")


# --------------------------------------------------------------------------- the body

def check_transaction(tx: Transaction) -> str | None:
    """Core's CheckTransaction, the parts that need no chain state: the reject reason, or None."""
    if not tx.inputs:
        return "bad-txns-vin-empty"
    if not tx.outputs:
        return "bad-txns-vout-empty"
    if tx.base_size * WITNESS_SCALE > MAX_BLOCK_WEIGHT:
        return "bad-txns-oversize"
    total = 0
    for out in tx.outputs:
        if out.value < 0:
            return "bad-txns-vout-negative"
        if out.value > MAX_MONEY:
            return "bad-txns-vout-toolarge"
        total += out.value
        if total > MAX_MONEY:
            return "bad-txns-txouttotal-toolarge"
    prevouts = [(i.prev_hash, i.prev_index) for i in tx.inputs]
    if len(set(prevouts)) != len(prevouts):
        return "bad-txns-inputs-duplicate"
    if tx.is_coinbase:
        if not 2 <= len(tx.inputs[0].script_sig) <= MAX_COINBASE_SCRIPT:
            return "bad-cb-length"
    elif NULL_PREVOUT in prevouts:
        return "bad-txns-prevout-null"
    return None


def check_body(block: Block, height: int) -> None:
    """The rules of Core's CheckBlock and ContextualCheckBlock on the transactions themselves, in
    Core's order: size, one coinbase first, each transaction's structure, the BIP 34 height, the
    witness commitment (BIP 141) and the weight."""
    txs = block.txs

    def fail(reason: str, what: str) -> None:
        raise InvalidBlock(f"block {height}: {what}", height, reason)

    if not txs or len(txs) * WITNESS_SCALE > MAX_BLOCK_WEIGHT or block.base_size * WITNESS_SCALE > MAX_BLOCK_WEIGHT:
        fail("bad-blk-length", "size limits failed")
    if not txs[0].is_coinbase:
        fail("bad-cb-missing", "first transaction is not a coinbase")
    if any(t.is_coinbase for t in txs[1:]):
        fail("bad-cb-multiple", "more than one coinbase")
    for t in txs:
        reason = check_transaction(t)
        if reason:
            fail(reason, f"transaction {display_hex(t.txid)} is malformed ({reason})")
    if not txs[0].inputs[0].script_sig.startswith(script_number(height)):
        fail("bad-cb-height", "coinbase does not start with the block height (BIP 34)")
    commitment = find_commitment(txs[0])
    if commitment is not None:
        stack = txs[0].witnesses[0] if txs[0].witnesses else ()
        if len(stack) != 1 or len(stack[0]) != 32:
            fail("bad-witness-nonce-size", "coinbase witness is not one 32-byte reserved value")
        if witness_commitment(witness_root(txs), stack[0]) != commitment:
            fail("bad-witness-merkle-match", "witness commitment does not match the witnesses")
    elif any(t.has_witness for t in txs):
        fail("unexpected-witness", "witness data without a witness commitment")
    if block.weight > MAX_BLOCK_WEIGHT:
        fail("bad-blk-weight", "weight limit failed")


def check_block(params: ChainParams, rule: RetargetRule, height: int, block: Block,
                parent_hash: bytes, times: Sequence[int], bits: Sequence[int], now: int | None,
                check_pow: bool = True) -> bytes:
    """Every rule, in Core's order, for a block on a parent whose ancestors' times and bits are
    given; returns the block's hash or raises `InvalidBlock`."""
    block_hash = block.hash
    check_header(params, rule, height, block.header, block_hash, parent_hash, times, bits, now, check_pow)
    check_commitments(height, block.header.merkle_root, block.txids)
    check_body(block, height)
    return block_hash
