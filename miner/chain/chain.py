"""The embedded chain: a tree of blocks in a SQLite file, the most-work valid branch active.

A block is an 80-byte header plus a body of transactions whose merkle root is in the header.
Every block with a known parent is kept: valid ones on any branch, and invalid ones whose proof of
work meets the bits their own branch demands (so each stored invalid block cost real work),
marked with the reason. The active chain is the valid tip with the most cumulative work, the
first seen among equals (`index`). A block whose parent is unknown is refused with a clear
reason, not held: the caller (a node asking a peer) fetches the parent and delivers both in order.

Blocks are judged by `miner.consensus.checks`, against their own ancestors, and stored through
`store.ChainStore` (which runs every statement) one SQLite transaction each, a reorganisation
included; each block's fate comes back as an `outcome.BlockOutcome`. What callers may ask is
`queries.ChainQueries`. A writer (`miner mine`, the node) checks what it builds on before it
starts (`verify.startup_check`).
"""

from __future__ import annotations

import os
import sqlite3
import time as _time
from pathlib import Path
from typing import TYPE_CHECKING

from miner.chain import files
from miner.chain.diagnose import index_from_rows
from miner.chain.index import BlockTree, Node
from miner.chain.outcome import BlockOutcome, BlockResult, result_of
from miner.chain.queries import ChainQueries
from miner.chain.store import FORMAT_VERSION, ChainStore, short
from miner.chain.verify import startup_check, verify_chain
from miner.consensus.checks import (
    check_block,
    never_stored,
    worth_keeping,
)
from miner.consensus.params import ChainParams
from miner.errors import ChainError, InvalidBlock
from miner.primitives.block import Block

if TYPE_CHECKING:
    from typing_extensions import Self  # annotations only: never imported at run time


MAX_SEQ = (1 << 63) - 1  # blocks.seq is a SQLite INTEGER


class UnknownParent(InvalidBlock):
    """The block's parent is not stored: deliver the parent first."""


class StaleBlock(InvalidBlock):
    """The block was stored, but on a side branch: another block at its height came first."""


class Chain(ChainQueries):
    """A chain stored in one SQLite file. Not thread-safe: one `Chain` per thread."""

    def __init__(self, path: Path, store: ChainStore, params: ChainParams, readonly: bool = False,
                 genesis_committed: bool = True, tree: BlockTree | None = None):
        self.path = path
        self.store = store  # the file's connection and every statement run on it
        self.params = params
        self.readonly = readonly
        self.genesis_committed = genesis_committed
        self.rule = params.retarget_rule()
        self.damage: str | None = None
        if tree is None:
            self._load_index()  # sets self.tree
        else:
            self.tree = tree  # loaded and checked by the read-only probe that opened the file

    @property
    def format_version(self) -> int:
        return self.store.format_version

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(cls, path: str | Path, params: ChainParams) -> Chain:
        """A new chain file, created whole or not at all; of two processes creating the same
        file at once one creates it and the other opens the winner's file."""
        p = Path(path)
        ChainStore.create(p, params)
        return cls.open(p)

    @classmethod
    def open(cls, path: str | Path, readonly: bool = False, index: bool = True) -> Chain:
        """Open a chain file. A writer first passes `startup_check` on a read-only connection,
        so a damaged file is refused without a single byte of it changed; a file of an older
        format is then upgraded in one transaction. `index` False (read-only): the block index is
        not read, for a caller that reads every block itself (`verify`)."""
        p = Path(path)
        files.check_chain_path(p, must_exist=True)
        if not readonly:
            files.check_one_name(p)
            if not os.access(p, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
                # SQLite would open it read-only without a word, and the first block would fail.
                raise ChainError(f"{p}: cannot write to the chain file (it is read-only to this user or "
                                 f"on this medium); mine or serve a copy you may write, or read it with "
                                 f"'miner chain'")
        try:
            # Read-only probe first: a file that is not ours must not be turned into a WAL database.
            probe = ChainStore.open_readonly(p)
        except sqlite3.OperationalError as exc:
            raise ChainError(f"{p}: cannot open ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise ChainError(f"{p}: not a miner chain file ({exc})") from None
        try:
            params, version, committed = probe.read_meta()
            chain = cls(p, probe, params, readonly=True, genesis_committed=committed,
                        tree=None if index or not readonly else BlockTree())
            if readonly:
                return chain
            startup_check(chain)
        except BaseException:
            probe.close()  # a refused file is left as it was found, journal files included
            raise
        probe.close()
        try:
            writer = ChainStore.open_writer(p, version)
            if version < FORMAT_VERSION:
                writer.upgrade(committed)
                writable = cls(p, writer, params, genesis_committed=committed)
            else:
                # The probe's index, so a 100,000-block chain is read once, not twice; blocks
                # another writer adds meanwhile are picked up before the first block is stored.
                writable = cls(p, writer, params, genesis_committed=committed, tree=chain.tree)
        except sqlite3.Error as exc:
            raise ChainError(f"{p}: chain file cannot be opened for writing ({exc})") from None
        writable.check_writable()
        return writable

    @classmethod
    def open_or_create(cls, path: str | Path, params: ChainParams) -> Chain:
        p = Path(path)
        if p.exists() and p.stat().st_size > 0:
            return cls.open(p)
        return cls.create(p, params)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_index(self) -> None:
        try:
            store = self.store
            tree, self.damage = index_from_rows(store.stray_height(), store.active_hashes(), store.index_rows())
        except sqlite3.DatabaseError as exc:
            raise ChainError(f"{self.path}: chain file is damaged ({exc})") from None
        if not tree.active:
            raise ChainError(f"{self.path}: chain has no genesis block"
                             + (f" ({self.damage})" if self.damage else ""))
        self.tree = tree

    def check_writable(self) -> None:
        """Fail now, before any mining, if the file cannot take a block."""
        try:
            self.store.check_writable()
        except sqlite3.OperationalError as exc:
            self.store.close()
            raise ChainError(f"{self.path}: cannot write to the chain file ({exc})") from None

    def refuse_if_damaged(self) -> None:
        if self.damage:
            raise ChainError(f"{self.path}: {self.damage}; run 'miner chain verify'")

    # ------------------------------------------------------------------ writing

    def append(self, block: Block, now: int | None = None) -> int:
        """Store a block meant to extend the active tip (a miner's); returns its height. Raises
        `StaleBlock` when it was stored but another block at its height came first."""
        result = self.add_block(block, now)
        if not result.active:
            raise StaleBlock(f"block {result.height}: another block at this height was stored "
                             f"first; the chain stays on it", result.height)
        return result.height

    def add_block(self, block: Block, now: int | None = None) -> BlockOutcome:
        """Validate a block by every rule against its own ancestors and store it on whichever
        branch it extends, switching the active chain to it when it has the most work. Blocks
        stored by other processes are picked up first. A block already stored valid comes back
        as `DUPLICATE`. Raises `UnknownParent`, or `InvalidBlock` with the reason (the block is
        kept, marked invalid, when its proof of work was real and it cannot be a mutated copy of
        a valid block)."""
        outcome = self.add_blocks([block], now)[0]
        if outcome.result is BlockResult.MISSING_PREV:
            raise UnknownParent(outcome.message, reason=outcome.reason)
        if not outcome.stored:
            raise outcome.error()
        return outcome

    def add_blocks(self, blocks: list[Block], now: int | None = None) -> list[BlockOutcome]:
        """`add_block` for several blocks in one SQLite transaction (a sync's batch: one commit,
        one fsync, for what arrived together), each judged after those before it; each block's
        outcome, a refused one's included (the others go on). A failure of the file itself
        (disk full) stores none of them and raises `ChainError`."""
        self.refuse_if_damaged()
        if self.readonly:
            raise ChainError(f"{self.path}: opened read-only")
        clock = int(_time.time()) if now is None else now
        outcomes: list[BlockOutcome] = []
        try:
            with self.store.transaction():
                self.catch_up()
                for block in blocks:
                    outcomes.append(self._add_locked(block, block.hash, clock))
        except BaseException as exc:
            # Rolled back, nothing stored: the index is read back from the file, since memory
            # ran ahead of it for the batch's earlier blocks.
            self._load_index()
            if isinstance(exc, sqlite3.OperationalError):  # disk full, read-only, I/O error
                what = (f"block {short(blocks[0].hash)}" if len(blocks) == 1
                        else f"{len(blocks)} blocks from {short(blocks[0].hash)} on")
                raise ChainError(f"{self.path}: {what} could not be stored ({exc}); the chain is unchanged") from None
            raise
        return outcomes

    def judge(self, block: Block, now: int | None = None) -> BlockOutcome:
        """What `add_block` would make of a block, by every rule against its own ancestors,
        without storing it: `VALID`, or why not (a node asks this before it stores a block
        nobody asked for)."""
        placed = self._place(block.header.prev_hash, block.hash)
        if isinstance(placed, BlockOutcome):
            return placed
        times, bits = self.tree.history(placed)
        try:
            check_block(self.params, self.rule, placed.height + 1, block, placed.hash, times, bits,
                        int(_time.time()) if now is None else now)
        except InvalidBlock as exc:
            return BlockOutcome.refused(exc, block.hash)
        return BlockOutcome(BlockResult.VALID, block.hash, placed.height + 1)

    def catch_up(self) -> None:
        """Inside the write lock: reload the index if another process stored blocks."""
        last = self.store.last_seq()
        if last != self.tree.next_seq - 1:
            self._load_index()
            self.refuse_if_damaged()

    def _place(self, parent_hash: bytes, block_hash: bytes) -> Node | BlockOutcome:
        """A new block's parent, or the outcome that ends it before its own rules are read:
        stored already, its parent unknown, or an invalid ancestor."""
        tree = self.tree
        known = tree.nodes.get(block_hash)
        if known is not None:
            if not known.valid:
                return BlockOutcome(BlockResult.CACHED_INVALID, block_hash, known.height, "duplicate-invalid",
                                    f"block {known.height} ({short(block_hash)}) is already stored as "
                                    f"invalid: {known.status}")
            return BlockOutcome(BlockResult.DUPLICATE, block_hash, known.height, active=tree.is_active(known))
        parent = tree.nodes.get(parent_hash)
        if parent is None:
            return BlockOutcome(BlockResult.MISSING_PREV, block_hash, None, "prev-blk-not-found",
                                f"block {short(block_hash)}: its parent {short(parent_hash)} is "
                                f"not known; deliver the parent first")
        bad = tree.invalid_ancestor(parent)
        if bad is not None:
            height = parent.height + 1
            return BlockOutcome(BlockResult.INVALID_PREV, block_hash, height, "bad-prevblk",
                                f"block {height} ({short(block_hash)}) descends from invalid block "
                                f"{bad.height} ({short(bad.hash)}): {bad.status}")
        return parent

    def _add_locked(self, block: Block, block_hash: bytes, now: int) -> BlockOutcome:
        tree = self.tree
        header = block.header
        parent = self._place(header.prev_hash, block_hash)
        if isinstance(parent, BlockOutcome):
            return parent
        height = parent.height + 1
        times, bits = tree.history(parent)
        status = reason = ""
        try:
            check_block(self.params, self.rule, height, block, parent.hash, times, bits, now)
        except InvalidBlock as exc:
            refused_unstored = never_stored(exc.reason) or not worth_keeping(
                self.params, self.rule, height, header, block_hash, times, bits, now)
            if refused_unstored:
                return BlockOutcome.refused(exc, block_hash)
            status, reason = str(exc), exc.reason
        node = tree.make_node(block_hash, parent.hash, header.time, header.bits, status)
        if node.seq > MAX_SEQ:  # only an edited file gets here: SQLite's INTEGER ends at 2^63 - 1
            raise ChainError(f"{self.path}: a stored block's arrival number is {node.seq - 1}, the "
                             f"largest the file can hold, so no block can follow; run 'miner chain verify'")
        tree.add(node)
        try:
            self.store.insert_block(node.seq, block_hash, height, status, header.serialize(), block.raw_txs)
            switch = tree.better_than_tip(node)
            if switch:
                side = tree.branch(node)
                self.store.move_active(height - len(side), [(n.height, n.hash) for n in side])
        except BaseException:
            tree.discard(node)
            raise
        if status:  # stored, marked invalid: its descendants are refused at once
            return BlockOutcome(result_of(reason), block_hash, height, reason, status)
        if not switch:
            return BlockOutcome(BlockResult.SIDE, block_hash, height)
        return BlockOutcome(BlockResult.CONNECTED, block_hash, height, change=tree.reorg_to(node), active=True)

    def refresh(self) -> None:
        """Pick up blocks stored by other processes."""
        self._load_index()

    # ------------------------------------------------------------------ verification

    def verify(self, now: int | None = None, from_height: int = 0) -> int:
        """Re-validate every stored block on every branch (`verify.verify_chain`); returns the
        active chain's height."""
        try:
            return verify_chain(self, now, from_height)
        except sqlite3.DatabaseError as exc:
            raise ChainError(f"{self.path}: chain file is damaged ({exc})") from None
