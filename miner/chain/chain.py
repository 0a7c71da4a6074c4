"""The embedded chain: a tree of blocks in a SQLite file, the most-work valid branch active.

A block is an 80-byte header plus a body of transactions whose merkle root is in the header.
Every block with a known parent is kept: valid ones on any branch, and invalid ones whose proof of
work meets the bits their own branch demands (so each stored invalid block cost real work),
marked with the reason. The active chain is the valid tip with the most cumulative work, the
first seen among equals (`index`). A block whose parent is unknown is refused with a clear
reason, not held: the caller (a node asking a peer) fetches the parent and delivers both in order.

Blocks are judged by `miner.consensus.checks`, against their own ancestors, and stored by
`store` one SQLite transaction each, a reorganisation included. A writer (`miner mine`, the
node) checks what it builds on before it starts (`verify.startup_check`).
"""

from __future__ import annotations

import os
import sqlite3
import struct
import time as _time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from miner.chain import files, store
from miner.chain.index import BlockTree, ChainTip, Node, TipChange
from miner.chain.store import short
from miner.chain.verify import startup_check, verify_chain
from miner.consensus.checks import (
    check_block,
    median_time_past,
    never_stored,
    worth_keeping,
)
from miner.consensus.params import ChainParams
from miner.errors import ChainError, InvalidBlock, InvalidInput
from miner.primitives.block import Block
from miner.primitives.hashes import display_hex
from miner.primitives.header import BlockHeader

if TYPE_CHECKING:
    from typing_extensions import Self  # annotations only: never imported at run time


@dataclass(frozen=True)
class AddResult:
    """What storing a block did: `change` is set when the active tip moved; `duplicate` when the
    block was already stored (valid) and nothing was done."""

    hash: bytes
    height: int
    active: bool
    change: TipChange | None
    invalid: str = ""  # why the block, stored and marked, is invalid
    reason: str = ""  # and Core's reject reason for it
    duplicate: bool = False


MAX_SEQ = (1 << 63) - 1  # blocks.seq is a SQLite INTEGER


class UnknownParent(InvalidBlock):
    """The block's parent is not stored: deliver the parent first."""


class StaleBlock(InvalidBlock):
    """The block was stored, but on a side branch: another block at its height came first."""


class Chain:
    """A chain stored in one SQLite file. Not thread-safe: one `Chain` per thread."""

    def __init__(self, path: Path, conn: sqlite3.Connection, params: ChainParams,
                 format_version: int = store.FORMAT_VERSION, readonly: bool = False,
                 genesis_committed: bool = True, tree: BlockTree | None = None):
        self.path = path
        self.conn = conn
        self.params = params
        self.format_version = format_version
        self.readonly = readonly
        self.genesis_committed = genesis_committed
        self.rule = params.retarget_rule()
        self.damage: str | None = None
        if tree is None:
            self._load_index()  # sets self.tree
        else:
            self.tree = tree  # loaded and checked by the read-only probe that opened the file

    @property
    def rows(self) -> store.Layout:
        """The queries of this file's storage layout."""
        return store.layout(self.format_version)

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(cls, path: str | Path, params: ChainParams) -> Chain:
        """A new chain file, created whole or not at all; of two processes creating the same
        file at once one creates it and the other opens the winner's file."""
        p = Path(path)
        store.create_file(p, params)
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
            probe = store.connect_readonly(p)
        except sqlite3.OperationalError as exc:
            raise ChainError(f"{p}: cannot open ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise ChainError(f"{p}: not a miner chain file ({exc})") from None
        try:
            params, version, committed = store.read_meta(p, probe)
            chain = cls(p, probe, params, version, readonly=True, genesis_committed=committed,
                        tree=None if index or not readonly else BlockTree())
            if readonly:
                return chain
            startup_check(chain)
        except BaseException:
            probe.close()
            raise
        probe.close()
        try:
            conn = store.connect(p)
            if version < 3:
                store.upgrade(conn, committed)
                writable = cls(p, conn, params, 3, genesis_committed=committed)
            else:
                # The probe's index, so a 100,000-block chain is read once, not twice; blocks
                # another writer adds meanwhile are picked up before the first block is stored.
                writable = cls(p, conn, params, version, genesis_committed=committed, tree=chain.tree)
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
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_index(self) -> None:
        try:
            tree, self.damage = store.read_index(self.conn, self.rows)
        except sqlite3.DatabaseError as exc:
            raise ChainError(f"{self.path}: chain file is damaged ({exc})") from None
        if not tree.active:
            raise ChainError(f"{self.path}: chain has no genesis block"
                             + (f" ({self.damage})" if self.damage else ""))
        self.tree = tree

    def check_writable(self) -> None:
        """Fail now, before any mining, if the file cannot take a block."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            self.conn.close()
            raise ChainError(f"{self.path}: cannot write to the chain file ({exc})") from None

    def refuse_if_damaged(self) -> None:
        if self.damage:
            raise ChainError(f"{self.path}: {self.damage}; run 'miner chain verify'")

    # ------------------------------------------------------------------ reading

    @property
    def times(self) -> list[int]:
        """Times of the active chain by height."""
        return self.tree.times

    @property
    def bits(self) -> list[int]:
        """Bits of the active chain by height."""
        return self.tree.bits

    @property
    def tip_hash(self) -> bytes:
        return self.tree.active[-1]

    @property
    def height(self) -> int:
        return len(self.tree.active) - 1

    @property
    def chainwork(self) -> int:
        return self.tree.tip.chainwork

    def hash_at(self, height: int) -> bytes:
        if not 0 <= height <= self.height:
            raise InvalidInput(f"no block at height {height} (tip is {self.height})")
        return self.tree.active[height]

    def _stored(self, block_hash: bytes, what: str) -> tuple:
        row = self.conn.execute("SELECT header, body FROM blocks WHERE hash=?", (block_hash,)).fetchone()
        if row is None:
            raise ChainError(f"{what} is in the index but not stored; run 'miner chain verify'")
        return row

    def header(self, height: int) -> BlockHeader:
        return BlockHeader.deserialize(self._stored(self.hash_at(height), f"block {height}")[0])

    def block(self, height: int) -> Block:
        return self.block_by_hash(self.hash_at(height))

    def block_by_hash(self, block_hash: bytes) -> Block:
        node = self.tree.nodes.get(block_hash)
        if node is None:
            raise InvalidInput(f"no block with hash {display_hex(block_hash)}")
        header, body = self._stored(block_hash, f"block {node.height} ({short(block_hash)})")
        try:
            return Block.from_raw(BlockHeader.deserialize(header), store.parse_body(body))
        except (ValueError, TypeError, struct.error, InvalidInput) as exc:
            raise ChainError(f"block {node.height} cannot be decoded ({exc}); "
                             f"run 'miner chain verify'") from None

    def node(self, block_hash: bytes) -> Node | None:
        return self.tree.nodes.get(block_hash)

    def is_active(self, block_hash: bytes) -> bool:
        node = self.tree.nodes.get(block_hash)
        return node is not None and self.tree.is_active(node)

    def tips(self) -> list[ChainTip]:
        return self.tree.tips()

    def tip(self) -> BlockHeader:
        return self.header(self.height)

    def next_bits(self) -> int:
        """Bits the next block on the active tip must carry."""
        return self.rule.next_bits(self.height + 1, self.times, self.bits)

    def min_next_time(self) -> int:
        """Earliest valid time for the next block (one past the median time past)."""
        return median_time_past(self.times, self.height + 1) + 1

    # ------------------------------------------------------------------ writing

    def append(self, block: Block, now: int | None = None) -> int:
        """Store a block meant to extend the active tip (a miner's); returns its height. Raises
        `StaleBlock` when it was stored but another block at its height came first."""
        result = self.add_block(block, now)
        if not result.active:
            raise StaleBlock(f"block {result.height}: another block at this height was stored "
                             f"first; the chain stays on it", result.height)
        return result.height

    def add_block(self, block: Block, now: int | None = None) -> AddResult:
        """Validate a block by every rule against its own ancestors and store it on whichever
        branch it extends, switching the active chain to it when it has the most work. Blocks
        stored by other processes are picked up first. A block already stored valid comes back
        as `duplicate`. Raises `UnknownParent`, or `InvalidBlock` with the reason (the block is
        kept, marked invalid, when its proof of work was real and it cannot be a mutated copy of
        a valid block)."""
        outcome = self.add_blocks([block], now)[0]
        if isinstance(outcome, InvalidBlock):
            raise outcome
        if outcome.invalid:
            raise InvalidBlock(outcome.invalid, outcome.height, outcome.reason)
        return outcome

    def add_blocks(self, blocks: list[Block], now: int | None = None) -> list[AddResult | InvalidBlock]:
        """`add_block` for several blocks in one SQLite transaction (a sync's batch: one commit,
        one fsync, for what arrived together), each judged after those before it. A block
        refused unstored comes back as its `InvalidBlock` and the others go on; a failure of
        the file itself (disk full) stores none of them."""
        self.refuse_if_damaged()
        if self.readonly:
            raise ChainError(f"{self.path}: opened read-only")
        clock = int(_time.time()) if now is None else now
        outcomes: list[AddResult | InvalidBlock] = []
        try:
            with store.transaction(self.conn):
                self.catch_up()
                for block in blocks:
                    try:
                        outcomes.append(self._add_locked(block, block.hash, clock))
                    except InvalidBlock as exc:  # refused before anything of it was written
                        outcomes.append(exc)
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

    def catch_up(self) -> None:
        """Inside the write lock: reload the index if another process stored blocks."""
        last = self.conn.execute("SELECT max(seq) FROM blocks").fetchone()[0]
        if last != self.tree.next_seq - 1:
            self._load_index()
            self.refuse_if_damaged()

    def _add_locked(self, block: Block, block_hash: bytes, now: int) -> AddResult:
        tree = self.tree
        header = block.header
        known = tree.nodes.get(block_hash)
        if known is not None:
            if not known.valid:
                raise InvalidBlock(f"block {known.height} ({short(block_hash)}) is already stored as "
                                   f"invalid: {known.status}", known.height, "duplicate-invalid")
            return AddResult(block_hash, known.height, tree.is_active(known), None, duplicate=True)
        parent = tree.nodes.get(header.prev_hash)
        if parent is None:
            raise UnknownParent(f"block {short(block_hash)}: its parent {short(header.prev_hash)} is "
                                f"not known; deliver the parent first", reason="prev-blk-not-found")
        height = parent.height + 1
        bad = tree.invalid_ancestor(parent)
        if bad is not None:
            raise InvalidBlock(f"block {height} ({short(block_hash)}) descends from invalid block "
                               f"{bad.height} ({short(bad.hash)}): {bad.status}", height, "bad-prevblk")
        times, bits = tree.history(parent)
        status = reason = ""
        try:
            check_block(self.params, self.rule, height, block, parent.hash, times, bits, now)
        except InvalidBlock as exc:
            refused_unstored = never_stored(exc.reason) or not worth_keeping(
                self.params, self.rule, height, header, block_hash, times, bits, now)
            if refused_unstored:
                raise
            status, reason = str(exc), exc.reason
        node = tree.make_node(block_hash, parent.hash, header.time, header.bits, status)
        if node.seq > MAX_SEQ:  # only an edited file gets here: SQLite's INTEGER ends at 2^63 - 1
            raise ChainError(f"{self.path}: a stored block's arrival number is {node.seq - 1}, the "
                             f"largest the file can hold, so no block can follow; run 'miner chain verify'")
        tree.add(node)
        try:
            self.conn.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                               (node.seq, block_hash, height, status, header.serialize(),
                                store.serialize_body(block.raw_txs)))
            switch = tree.better_than_tip(node)
            if switch:
                side = tree.branch(node)
                fork = height - len(side)
                self.conn.execute("DELETE FROM active WHERE height > ?", (fork,))
                self.conn.executemany("INSERT INTO active VALUES (?, ?)",
                                       [(n.height, n.hash) for n in side])
        except BaseException:
            tree.discard(node)
            raise
        if status:
            return AddResult(block_hash, height, False, None, status, reason)
        return AddResult(block_hash, height, switch, tree.reorg_to(node) if switch else None)

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

    def block_count(self) -> int:
        """Blocks stored, on every branch, valid or marked invalid."""
        return self.conn.execute("SELECT count(*) FROM blocks WHERE height >= 0").fetchone()[0]

