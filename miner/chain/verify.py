"""Judging without storing: the full `verify` pass over every branch, the start-up check a
writer makes before it builds on a file, and a block proposal's verdict (BIP 23).

Blocks are judged by the same `miner.consensus.checks` rules that admitted them (the header
against its ancestors, the body against the header), read straight from the stored bytes. The
structure rules of `check_body` are judged once, when a block arrives: files of earlier
releases hold blocks from before some of them existed.
"""

from __future__ import annotations

import sqlite3
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from miner.chain.index import GENESIS_PARENT, BlockTree
from miner.chain.store import ChainStore, parse_body, serialize_body, short
from miner.consensus.checks import check_block, check_commitments, check_header
from miner.consensus.params import ChainParams
from miner.consensus.retarget import RetargetRule
from miner.errors import ChainError, InvalidBlock
from miner.primitives.block import Block
from miner.primitives.hashes import sha256d
from miner.primitives.header import HEADER_SIZE
from miner.primitives.transaction import txid


class Chain(Protocol):
    """What the judging here reads of an open chain (`miner.chain.chain.Chain` is one): its rules,
    its file and index, and two things it can be asked to do first. Verify never imports the
    chain that calls it."""

    params: ChainParams
    rule: RetargetRule
    genesis_committed: bool  # format 2 on: genesis commits to the parameters
    path: Path
    damage: str | None  # what loading the index found wrong, if anything
    store: ChainStore  # the file's rows, read through its statements
    tree: BlockTree

    @property
    def times(self) -> Sequence[int]: ...

    @property
    def bits(self) -> Sequence[int]: ...

    @property
    def tip_hash(self) -> bytes: ...

    @property
    def height(self) -> int: ...

    def refuse_if_damaged(self) -> None: ...

    def catch_up(self) -> None: ...

# Blocks a writer re-validates in full when it opens a chain (like Bitcoin Core's -checkblocks);
# every active header's link to its parent is checked too.
CHECK_BLOCKS = 1000


_FIELDS = struct.Struct("<i32s32sII4x")  # version, prev_hash, merkle_root, time, bits of a header


class StoredHeader(NamedTuple):
    """A stored header's fields as the rules read them, straight from its bytes: a pass over
    100,000 blocks does not build (and validate the ranges of) 100,000 `BlockHeader`s whose
    fields came out of a fixed-size unpack."""

    version: int
    prev_hash: bytes
    merkle_root: bytes
    time: int
    bits: int
    raw: bytes

    def serialize(self) -> bytes:
        return self.raw


def _where(height: int, stored_hash: object) -> str:
    return f"block {height} ({short(stored_hash) if isinstance(stored_hash, bytes) else '?'})"


def _decode(height: int, stored_hash: object, raw_header: bytes, raw_body: bytes) -> tuple[StoredHeader, list[bytes]]:
    """A stored block's header fields and transactions, or `InvalidBlock` naming it."""
    try:
        if len(raw_header) != HEADER_SIZE:
            raise ValueError(f"a header is {HEADER_SIZE} bytes, got {len(raw_header)}")
        return StoredHeader(*_FIELDS.unpack(raw_header), raw_header), parse_body(raw_body)
    except (ValueError, TypeError, struct.error) as exc:
        raise InvalidBlock(f"{_where(height, stored_hash)}: cannot be decoded ({exc})", height) from None


def _check_stored(chain: Chain, height: int, header: StoredHeader, txs: list[bytes], parent_hash: bytes,
                  times: Sequence[int], bits: Sequence[int], now: int) -> bytes:
    """A stored block by the rules it was admitted by; returns its hash."""
    block_hash = sha256d(header.raw)
    check_header(chain.params, chain.rule, height, header, block_hash, parent_hash, times, bits, now)
    check_commitments(height, header.merkle_root, [txid(t) for t in txs])
    return block_hash


def expected_genesis(chain: Chain) -> tuple[bytes, bytes]:
    """Genesis header and body as the stored parameters make them."""
    committed = chain.genesis_committed
    return (chain.params.genesis_header(committed).serialize(),
            serialize_body(chain.params.genesis_txs(committed)))


def startup_check(chain: Chain, blocks: int = CHECK_BLOCKS) -> None:
    """What a writer checks before it builds on the chain, refusing with the first problem: the
    index (every active header links to its parent's stored hash), genesis against the stored
    parameters (which genesis commits to, from format 2), the active chain being the most-work
    one, and its last `blocks` blocks in full, stored hashes included, so the tip that new blocks
    would extend is the real one. Everything is re-validated by `verify_chain`. A column SQLite
    cannot hand back as stored (a body turned TEXT that is not UTF-8) is damage too, named in one
    line like the rest."""
    try:
        _startup_check(chain, blocks)
    except sqlite3.DatabaseError as exc:
        raise ChainError(f"{chain.path}: chain file is damaged ({exc}); run 'miner chain verify'") from None


def _startup_check(chain: Chain, blocks: int) -> None:
    if chain.damage:
        raise ChainError(f"{chain.path}: {chain.damage}; run 'miner chain verify'")
    if chain.store.block_row(chain.tree.active[0]) != expected_genesis(chain):
        raise ChainError(f"{chain.path}: block 0: genesis does not match the chain parameters "
                         f"(the parameters or genesis were edited); the chain is refused")
    best = chain.tree.best_tip()
    if best.hash != chain.tip_hash:
        raise ChainError(f"{chain.path}: the active chain ends at block {chain.height} but block "
                         f"{best.height} ({short(best.hash)}) has more work; run 'miner chain verify'")
    try:
        _verify_active(chain, max(1, chain.height - blocks + 1), int(time.time()))
    except InvalidBlock as exc:
        if exc.reason == "time-too-new":  # the clock is behind the chain, not the chain wrong
            raise ChainError(f"{chain.path}: the chain is ahead of this computer's clock ({exc}); "
                             f"fix the clock, or wait") from None
        raise ChainError(f"{chain.path}: {exc}; the chain is refused") from None


def verify_chain(chain: Chain, now: int | None = None, from_height: int = 0) -> int:
    """Re-validate every stored block on every branch (or, from `from_height`, the active chain
    only, against the index below it); returns the active chain's height.

    Raises `InvalidBlock` naming the first bad block by height and hash. Blocks are judged
    against their own ancestors as stored, so one damaged block is named, not its children; the
    active chain must then be the most-work valid one.
    """
    clock = int(time.time()) if now is None else now
    stray = chain.store.stray_height()
    if stray is not None:
        raise InvalidBlock(f"block {stray}: a stray row below genesis", stray)
    if from_height > 0:
        return _verify_active(chain, from_height, clock)
    seen = BlockTree()
    stored_active = dict(chain.store.active_hashes())  # height -> hash
    genesis = expected_genesis(chain)
    for seq, stored_hash, height, status, raw_header, raw_body in chain.store.all_blocks():
        if not seen.active:
            _start_at_genesis(seen, genesis, seq, stored_hash, height, raw_header, raw_body)
            continue
        header, txs = _decode(height, stored_hash, raw_header, raw_body)
        # Most blocks extend the verified active chain: judged against its lists directly,
        # without building a Node for the block or its parent.
        on_tip = header.prev_hash == seen.active[-1]
        if on_tip:
            if height != len(seen.active):
                raise InvalidBlock(f"{_where(height, stored_hash)}: stored at the wrong height (its parent "
                                   f"is block {len(seen.active) - 1})", height)
            times, bits = seen.times, seen.bits
        else:
            times, bits = _side_history(seen, stored_active, header.prev_hash, height, stored_hash)
        if status:
            block_hash = sha256d(raw_header)  # stored as invalid: its reason is not re-derived
        else:
            try:
                block_hash = _check_stored(chain, height, header, txs, header.prev_hash, times, bits, clock)
            except InvalidBlock as exc:
                raise InvalidBlock(f"{exc} (hash {short(sha256d(raw_header))})", height, exc.reason) from None
        if stored_hash != block_hash:
            raise InvalidBlock(f"{_where(height, stored_hash)}: stored hash does not match its header", height)
        if on_tip and not status and stored_active.get(height) == block_hash:
            seen.extend(block_hash, header.time, header.bits, seq)  # the stored active chain
        else:
            seen.add(seen.make_node(block_hash, header.prev_hash, header.time, header.bits,
                                    status, seq=seq))
    if not seen.active:
        raise InvalidBlock("block 0: chain has no genesis block", 0)
    return _check_active_is_best(seen, stored_active)


def _start_at_genesis(seen: BlockTree, genesis: tuple[bytes, bytes], seq: int, stored_hash: object,
                      height: object, raw_header: bytes, raw_body: bytes) -> None:
    """The first row must be genesis as the stored parameters make it; it starts `seen`."""
    if height != 0 or (raw_header, raw_body) != genesis:
        raise InvalidBlock("block 0: genesis does not match the chain parameters", 0)
    if stored_hash != sha256d(raw_header):
        raise InvalidBlock("block 0: stored hash does not match its header", 0)
    t, b = struct.unpack_from("<II", raw_header, 68)
    seen.add(seen.make_node(stored_hash, GENESIS_PARENT, t, b, seq=seq))


def _side_history(seen: BlockTree, stored_active: dict[int, bytes], parent_hash: bytes, height: int,
                  stored_hash: object) -> tuple[Sequence[int], Sequence[int]]:
    """The times and bits a block off the verified tip is judged against; its parent must be
    verified already, one below it, and valid all the way down."""
    parent = seen.nodes.get(parent_hash)
    if parent is None:
        if stored_active.get(height - 1, parent_hash) == parent_hash:
            raise InvalidBlock(f"block {height - 1}: missing from the chain file "
                               f"({_where(height, stored_hash)} names it as its parent)", height - 1)
        raise InvalidBlock(f"{_where(height, stored_hash)}: previous hash does not link to a stored "
                           f"block", height)
    if parent.height != height - 1:
        raise InvalidBlock(f"{_where(height, stored_hash)}: stored at the wrong height (its parent "
                           f"is block {parent.height})", height)
    bad = seen.invalid_ancestor(parent)
    if bad is not None:
        raise InvalidBlock(f"{_where(height, stored_hash)}: descends from invalid block {bad.height} "
                           f"({short(bad.hash)})", height)
    return seen.history(parent)


def _check_active_is_best(seen: BlockTree, stored: dict[int, bytes]) -> int:
    """The stored active chain must be the path to the most-work valid tip."""
    best = seen.best_tip()
    side = seen.branch(best)
    path = seen.active[:best.height - len(side) + 1] + [n.hash for n in side]
    for height, want in enumerate(path):
        have = stored.get(height)
        if have != want:
            raise InvalidBlock(
                f"block {height}: the active chain holds "
                f"{short(have) if have else 'nothing'} but the most-work chain has {short(want)}", height)
    if len(stored) > len(path):
        raise InvalidBlock(f"block {len(path)}: the active chain goes past the most-work tip "
                           f"{short(best.hash)}", len(path))
    return len(path) - 1


def _verify_active(chain: Chain, from_height: int, clock: int) -> int:
    """The active chain from `from_height`, judged against the index below it."""
    times: list[int] = chain.times[:from_height]  # slices: copies the pass appends to
    bits: list[int] = chain.bits[:from_height]
    parent_hash = chain.tree.active[from_height - 1]
    expected_height = from_height
    for height, stored_hash, raw_header, raw_body in chain.store.active_blocks(from_height):
        if height != expected_height:
            raise InvalidBlock(f"block {expected_height}: missing from the chain file", expected_height)
        expected_height += 1
        header, txs = _decode(height, stored_hash, raw_header, raw_body)
        block_hash = _check_stored(chain, height, header, txs, parent_hash, times, bits, clock)
        if stored_hash != block_hash:
            raise InvalidBlock(f"block {height}: stored hash does not match its header", height)
        times.append(header.time)
        bits.append(header.bits)
        parent_hash = block_hash
    return expected_height - 1


def check_proposal(chain: Chain, block: Block, now: int | None = None) -> str | None:
    """A block proposal's verdict (BIP 23), as Bitcoin Core's TestBlockValidity gives it:
    None when the block would be valid on the active tip but for its proof of work, else
    the reject reason. Nothing is stored; a block not built on the tip is not judged."""
    chain.refuse_if_damaged()
    chain.catch_up()
    tree = chain.tree
    known = tree.nodes.get(block.hash)
    if known is not None:
        return "duplicate" if known.valid else "duplicate-invalid"
    if block.header.prev_hash != tree.tip.hash:
        return "inconclusive-not-best-prevblk"
    times, bits = tree.history(tree.tip)
    try:
        check_block(chain.params, chain.rule, tree.tip.height + 1, block, tree.tip.hash, times, bits,
                    int(time.time()) if now is None else now, check_pow=False)
    except InvalidBlock as exc:
        return exc.reason
    return None
