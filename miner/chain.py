"""The embedded chain: a tree of blocks in a SQLite file, the most-work valid branch active.

A block is an 80-byte header plus a body of raw transactions whose merkle root is in the header.
Every block with a known parent is kept: valid ones on any branch, and invalid ones whose proof of
work meets the bits their own branch demands (so each stored invalid block cost real work),
marked with the reason. The active chain is the valid tip with the most cumulative work, the
first seen among equals (`blocktree`). A block whose parent is unknown is refused with a clear
reason, not held: the caller (a node asking a peer) fetches the parent and delivers both in order.

Each change (a block stored, and the active chain switched with it) is one SQLite transaction in
WAL mode with `synchronous=FULL`: a process killed at any instant leaves the old state or the
new one, never a mix. `check_block` serves adding (against the block's own ancestors) and
`verify` (a fresh pass over everything stored), so the two never disagree.

A file is created aside and linked into place complete, so it either does not exist or is a
valid chain. A writer (`miner mine`) checks what it builds on before it starts (`startup_check`);
readers open the file read-only and work on read-only media. Files of formats 1 and 2 (one block
per height) are read as they are, and upgraded in place, in one transaction, when a writer opens
them.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import struct
import time as _time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .blocktree import GENESIS_PARENT, BlockTree, ChainTip, Node, TipChange
from .errors import ChainError, InvalidBlock, UsageError
from .header import HEADER_SIZE, BlockHeader, proof_of_work_error, sha256d
from .params import ChainParams
from .retarget import RetargetRule
from .tx import merkle_root, parse_body, serialize_body, txid

FORMAT_NAME = "pow-miner-chain"
# Format 2: genesis commits to the chain parameters (ChainParams.genesis_txs), so an edited
# parameter no longer matches the stored genesis. Format 3: a block tree (every branch kept, an
# `active` table indexing the active chain by height). Formats 1 and 2 keep opening.
FORMAT_VERSION = 3
SUPPORTED_VERSIONS = ("1", "2", "3")
MTP_SPAN = 11  # blocks in Bitcoin's median-time-past
# Blocks a writer re-validates in full when it opens a chain (like Bitcoin Core's -checkblocks);
# every active header's link to its parent is checked too.
CHECK_BLOCKS = 1000

# Every block (seq: arrival order, status: '' or why it is invalid) and the active chain by height.
_TREE_TABLES = """
CREATE TABLE blocks (
    seq    INTEGER PRIMARY KEY,
    hash   BLOB NOT NULL UNIQUE,
    height INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT '',
    header BLOB NOT NULL,
    body   BLOB NOT NULL
);
CREATE TABLE active (height INTEGER PRIMARY KEY, hash BLOB NOT NULL);
"""
_SCHEMA = "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);" + _TREE_TABLES

# Formats 1 and 2 stored one block per height: `blocks(height PRIMARY KEY, hash, header, body)`.
_UPGRADE_FROM_LIST = "ALTER TABLE blocks RENAME TO blocks_by_height;" + _TREE_TABLES + """
INSERT INTO blocks SELECT height, hash, height, '', header, body FROM blocks_by_height ORDER BY height;
INSERT INTO active SELECT height, hash FROM blocks_by_height ORDER BY height;
DROP TABLE blocks_by_height;
"""


@dataclass(frozen=True)
class _Layout:
    """The queries that read one storage layout."""

    index: str  # seq, hash, status, header: every block, parents first
    active: str  # height, hash of the active chain, by height
    active_rows: str  # height, hash, header, body of the active chain from a height
    all_rows: str  # seq, hash, height, status, header, body, parents first


_TREE = _Layout(
    index="SELECT seq, hash, status, header FROM blocks ORDER BY seq",
    active="SELECT height, hash FROM active ORDER BY height",
    active_rows="SELECT a.height, b.hash, b.header, b.body FROM active a JOIN blocks b ON b.hash = a.hash "
                "WHERE a.height >= ? ORDER BY a.height",
    all_rows="SELECT seq, hash, height, status, header, body FROM blocks ORDER BY seq",
)
_LIST = _Layout(
    index="SELECT height, hash, '', header FROM blocks WHERE height >= 0 ORDER BY height",
    active="SELECT height, hash FROM blocks WHERE height >= 0 ORDER BY height",
    active_rows="SELECT height, hash, header, body FROM blocks WHERE height >= ? ORDER BY height",
    all_rows="SELECT height, hash, height, '', header, body FROM blocks WHERE height >= 0 ORDER BY height",
)


def median_time_past(times: Sequence[int], height: int) -> int:
    """Median of the (up to) 11 block times below `height`, as Bitcoin Core computes it."""
    window = sorted(times[max(0, height - MTP_SPAN):height])
    return window[len(window) // 2]


@dataclass(frozen=True)
class Block:
    height: int
    header: BlockHeader
    txs: list[bytes]

    @property
    def hash(self) -> bytes:
        return self.header.hash()


@dataclass(frozen=True)
class AddResult:
    """What storing a block did: `change` is set when the active tip moved."""

    hash: bytes
    height: int
    active: bool
    change: TipChange | None
    invalid: str = ""  # why the block, stored and marked, is invalid
    reason: str = ""  # and Core's reject reason for it


class UnknownParent(InvalidBlock):
    """The block's parent is not stored: deliver the parent first."""


class StaleBlock(InvalidBlock):
    """The block was stored, but on a side branch: another block at its height came first."""


# Reject reasons of blocks that may be a valid block mutated in transit (Core's BLOCK_MUTATED):
# the header can be genuine, so the block is refused without being marked invalid, and the real
# block with the same header is still accepted when it arrives.
MUTATED = frozenset({"bad-txnmrklroot", "bad-txns-duplicate", "bad-witness-merkle-match",
                     "bad-witness-nonce-size", "unexpected-witness"})
# A header that fails its own checks never enters Core's block index: it is refused, not stored.
HEADER_RULES = frozenset({"high-hash", "bad-diffbits", "time-too-old", "time-too-new", "bad-prevblk"})


def check_block(params: ChainParams, rule: RetargetRule, height: int, header: BlockHeader,
                txs: Sequence[bytes], parent_hash: bytes, times: Sequence[int],
                bits: Sequence[int], now: int | None, check_pow: bool = True) -> bytes:
    """Validate a non-genesis block against its ancestors (their times and bits by height,
    ending at the parent); returns its hash or raises. The rules are checked in Bitcoin Core's
    order (the header's own proof of work, then its bits, times, then the body), so a block
    breaking several is refused with the reason Core would give. `check_pow` False: every rule
    but the proof of work, for a block proposal (BIP 23) that is not mined yet."""
    if header.prev_hash != parent_hash:
        raise InvalidBlock(f"block {height}: previous hash does not link to block {height - 1}",
                           height, "bad-prevblk")
    block_hash = header.hash()
    pow_error = proof_of_work_error(block_hash, header.bits, params.pow_limit) if check_pow else None
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
        raise InvalidBlock(f"block {height}: time {header.time} is more than "
                           f"{params.max_future} s in the future", height, "time-too-new")
    if not txs:
        raise InvalidBlock(f"block {height}: no transactions", height, "bad-blk-length")
    ids = [txid(t) for t in txs]
    if merkle_root(ids) != header.merkle_root:
        raise InvalidBlock(f"block {height}: merkle root does not match its transactions", height,
                           "bad-txnmrklroot")
    if len(set(ids)) != len(ids):
        # CVE-2012-2459: a repeated transaction can leave the merkle root unchanged.
        raise InvalidBlock(f"block {height}: a transaction appears twice", height, "bad-txns-duplicate")
    return block_hash


def short(block_hash: bytes) -> str:
    """A block hash as users see it (display order), cut to 16 digits for messages."""
    return block_hash[::-1].hex()[:16]


class Chain:
    """A chain stored in one SQLite file. Not thread-safe: one `Chain` per thread."""

    def __init__(self, path: Path, conn: sqlite3.Connection, params: ChainParams,
                 format_version: int = FORMAT_VERSION, readonly: bool = False,
                 genesis_committed: bool = True, tree: BlockTree | None = None):
        self.path = path
        self._conn = conn
        self.params = params
        self.format_version = format_version
        self.readonly = readonly
        self.genesis_committed = genesis_committed
        self.rule = params.retarget_rule()
        # Called after each committed switch of the active tip (a miner drops stale work).
        self.listeners: list[Callable[[TipChange], None]] = []
        self.damage: str | None = None
        if tree is None:
            self._load_index()  # sets self.tree
        else:
            self.tree = tree  # loaded and checked by the read-only probe that opened the file

    @property
    def _layout(self) -> _Layout:
        return _TREE if self.format_version >= 3 else _LIST

    # ------------------------------------------------------------------ opening

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    @staticmethod
    def _connect_readonly(path: Path) -> sqlite3.Connection:
        """A connection that never writes. A WAL file needs its -shm beside it; on a read-only
        medium that cannot be made, and there nobody can write either, so read it as immutable."""
        uri = f"file:{_uri_path(path)}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
            if os.access(path.parent, os.W_OK) and not _read_only_fs(path):
                raise
        return sqlite3.connect(f"file:{_uri_path(path)}?immutable=1", uri=True, isolation_level=None)

    @classmethod
    def create(cls, path: str | os.PathLike, params: ChainParams) -> "Chain":
        """Build the new file aside and link it into place complete: a process killed at any
        moment leaves either no chain file or a valid one, and of two processes creating the
        same file at once one wins and the other opens the winner's file."""
        p = Path(path)
        check_chain_path(p, must_exist=False)
        if p.exists() and p.stat().st_size > 0:
            raise UsageError(f"{p}: already exists; open it instead of creating it")
        tmp = p.with_name(f".{p.name}.creating-{os.getpid()}-{_time.monotonic_ns()}")
        try:
            conn = cls._connect(tmp)
            try:
                genesis = params.genesis_header(committed=True)
                with _transaction(conn):
                    _execute_script(conn, _SCHEMA)
                    conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                        ("format", FORMAT_NAME), ("version", str(FORMAT_VERSION)),
                        ("genesis", "committed"), ("params", params.to_json())])
                    conn.execute("INSERT INTO blocks VALUES (0, ?, 0, '', ?, ?)",
                                 (genesis.hash(), genesis.serialize(),
                                  serialize_body(params.genesis_txs(committed=True))))
                    conn.execute("INSERT INTO active VALUES (0, ?)", (genesis.hash(),))
            finally:
                conn.close()  # the last connection checkpoints the WAL into the file
            try:
                os.link(tmp, p)  # atomic, and never replaces a file another process linked first
            except FileExistsError:
                if p.stat().st_size > 0:
                    return cls.open(p)  # a concurrent `miner mine` created it: use theirs
                os.replace(tmp, p)  # an empty file (touched by hand) is no chain: replace it
        except sqlite3.Error as exc:
            raise ChainError(f"{p}: cannot create the chain file ({exc})") from None
        except OSError as exc:
            raise ChainError(f"{p}: cannot create the chain file ({_os_reason(exc)})") from None
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
                try:
                    leftover.unlink()
                except OSError:
                    pass
        return cls.open(p)

    @classmethod
    def open(cls, path: str | os.PathLike, readonly: bool = False) -> "Chain":
        """Open a chain file. A writer first passes `startup_check` on a read-only connection,
        so a damaged file is refused without a single byte of it changed; a file of an older
        format is then upgraded in one transaction."""
        p = Path(path)
        check_chain_path(p, must_exist=True)
        try:
            # Read-only probe first: a file that is not ours must not be turned into a WAL database.
            probe = cls._connect_readonly(p)
        except sqlite3.OperationalError as exc:
            raise ChainError(f"{p}: cannot open ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise ChainError(f"{p}: not a miner chain file ({exc})") from None
        try:
            params, version, committed = cls._read_meta(p, probe)
            chain = cls(p, probe, params, version, readonly=True, genesis_committed=committed)
            if readonly:
                return chain
            chain.startup_check()
        except BaseException:
            probe.close()
            raise
        probe.close()
        try:
            conn = cls._connect(p)
            if version < 3:
                cls._upgrade(conn, committed)
                writable = cls(p, conn, params, 3, genesis_committed=committed)
            else:
                # The probe's index, so a 100,000-block chain is read once, not twice; blocks
                # another writer adds meanwhile are picked up before the first block is stored.
                writable = cls(p, conn, params, version, genesis_committed=committed, tree=chain.tree)
        except sqlite3.Error as exc:
            raise ChainError(f"{p}: chain file cannot be opened for writing ({exc})") from None
        writable.check_writable()
        return writable

    @staticmethod
    def _upgrade(conn: sqlite3.Connection, committed: bool) -> None:
        """Formats 1 and 2 to the block tree, in one transaction: a kill leaves the old file."""
        with _transaction(conn):
            version = conn.execute("SELECT value FROM meta WHERE key='version'").fetchone()[0]
            if version == str(FORMAT_VERSION):
                return  # another writer upgraded it between our check and our lock
            _execute_script(conn, _UPGRADE_FROM_LIST)
            conn.execute("UPDATE meta SET value=? WHERE key='version'", (str(FORMAT_VERSION),))
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('genesis', ?)",
                         ("committed" if committed else "plain",))

    @staticmethod
    def _read_meta(p: Path, conn: sqlite3.Connection) -> tuple[ChainParams, int, bool]:
        try:
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            raise ChainError(f"{p}: not a miner chain file ({exc})") from None
        if rows.get("format") != FORMAT_NAME:
            raise ChainError(f"{p}: not a miner chain file (no '{FORMAT_NAME}' marker)")
        if rows.get("version") not in SUPPORTED_VERSIONS:
            raise ChainError(f"{p}: chain format version {str(rows.get('version'))[:20]!r} is not supported")
        try:
            params = ChainParams.from_json(rows["params"])
        except (KeyError, ValueError, TypeError, AttributeError, UsageError) as exc:
            raise ChainError(f"{p}: chain parameters are damaged ({exc})") from None
        version = int(rows["version"])
        # Genesis commits to the parameters from format 2 on; an upgraded format 1 file says so.
        committed = version == 2 or (version >= 3 and rows.get("genesis") != "plain")
        return params, version, committed

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, params: ChainParams) -> "Chain":
        p = Path(path)
        if p.exists() and p.stat().st_size > 0:
            return cls.open(p)
        return cls.create(p, params)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Chain":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_index(self) -> None:
        """Every block's index entry, and the active chain's hashes, times and bits by height.

        A gap in the active chain, a header of the wrong size, an active block that does not
        link to its parent's stored hash or a side block whose parent is not stored marks the
        chain damaged: it still opens read-only (so `verify` and `info` can name the block) but
        refuses new blocks. The whole index is two table scans: about 0.1 s for 100,000 blocks.
        """
        tree = BlockTree()
        self.damage = None
        unpack = struct.Struct("<II").unpack_from
        conn, layout = self._conn, self._layout
        try:
            stray = conn.execute("SELECT min(height) FROM blocks WHERE height < 0").fetchone()[0]
            if stray is not None:
                self.damage = f"stray block row at height {stray}"
            hashes: list[bytes] = []
            for height, block_hash in conn.execute(layout.active):
                if height != len(hashes):
                    self.damage = self.damage or f"block {len(hashes)} is missing"
                    break
                hashes.append(block_hash)
            height_of = {h: i for i, h in enumerate(hashes)}
            n = len(hashes)
            times, bits, seqs = [0] * n, [0] * n, [-1] * n
            unlinked = n  # the first active block that does not link to its parent
            side_rows = []
            for seq, block_hash, status, header in conn.execute(layout.index):
                i = height_of.get(block_hash)
                if not isinstance(header, bytes) or len(header) != HEADER_SIZE:
                    self.damage = self.damage or f"block {i if i is not None else '?'} has a damaged header"
                    continue
                if i is None or status:
                    side_rows.append((seq, block_hash, status, header))
                    continue
                if i and header[4:36] != hashes[i - 1]:
                    unlinked = min(unlinked, i)
                times[i], bits[i] = unpack(header, 68)
                seqs[i] = seq
        except sqlite3.DatabaseError as exc:
            raise ChainError(f"{self.path}: chain file is damaged ({exc})") from None
        # Active rows must all be stored, valid and linked; the chain stops at the first that is not.
        good = min(next((i for i, s in enumerate(seqs) if s < 0), n), unlinked)
        if good < n and not self.damage:
            marked = {h for _, h, status, _ in side_rows if status}
            self.damage = (f"block {good} does not link to the stored hash of block {good - 1}"
                           if good == unlinked else f"block {good} is active but marked invalid"
                           if hashes[good] in marked else f"block {good} is missing")
        tree.load_active(hashes[:good], times[:good], bits[:good], seqs[:good])
        for seq, block_hash, status, header in side_rows:
            if block_hash in tree.nodes:
                continue  # an active block also listed as invalid: damage named above
            up = tree.nodes.get(header[4:36])
            if up is None:
                self.damage = self.damage or (f"side block {short(block_hash)} does not link to a "
                                              f"stored parent")
                continue
            t, b = unpack(header, 68)
            tree.add(tree.make_node(block_hash, up.hash, t, b, status or "", seq=seq))
        if not tree.active:
            raise ChainError(f"{self.path}: chain has no genesis block"
                             + (f" ({self.damage})" if self.damage else ""))
        self.tree = tree

    def startup_check(self, blocks: int = CHECK_BLOCKS) -> None:
        """What a writer checks before it builds on the chain, refusing with the first problem:
        the index (every active header links to its parent's stored hash), genesis against the
        stored parameters (which genesis commits to, from format 2), the active chain being the
        most-work one, and its last `blocks` blocks in full, stored hashes included, so the tip
        that new blocks would extend is the real one. Everything is re-validated by `verify`."""
        if self.damage:
            raise ChainError(f"{self.path}: {self.damage}; run 'miner chain verify'")
        row = self._conn.execute(
            "SELECT header, body FROM blocks WHERE hash = ?", (self.tree.active[0],)).fetchone()
        if row is None or tuple(row) != self._expected_genesis():
            raise ChainError(f"{self.path}: block 0: genesis does not match the chain parameters "
                             f"(the parameters or genesis were edited); the chain is refused")
        best = self.tree.best_tip()
        if best.hash != self.tip_hash:
            raise ChainError(f"{self.path}: the active chain ends at block {self.height} but block "
                             f"{best.height} ({short(best.hash)}) has more work; run 'miner chain verify'")
        try:
            self._verify_active(max(1, self.height - blocks + 1), int(_time.time()))
        except InvalidBlock as exc:
            raise ChainError(f"{self.path}: {exc}; the chain is refused") from None

    def _expected_genesis(self) -> tuple[bytes, bytes]:
        """Genesis header and body as the stored parameters make them."""
        committed = self.genesis_committed
        return (self.params.genesis_header(committed).serialize(),
                serialize_body(self.params.genesis_txs(committed)))

    def check_writable(self) -> None:
        """Fail now, before any mining, if the file cannot take a block."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            self._conn.close()
            raise ChainError(f"{self.path}: cannot write to the chain file ({exc})") from None

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

    def _hash_at(self, height: int) -> bytes:
        if not 0 <= height <= self.height:
            raise UsageError(f"no block at height {height} (tip is {self.height})")
        return self.tree.active[height]

    def _stored(self, block_hash: bytes, what: str) -> tuple:
        row = self._conn.execute("SELECT header, body FROM blocks WHERE hash=?", (block_hash,)).fetchone()
        if row is None:
            raise ChainError(f"{what} is in the index but not stored; run 'miner chain verify'")
        return row

    def header(self, height: int) -> BlockHeader:
        return BlockHeader.deserialize(self._stored(self._hash_at(height), f"block {height}")[0])

    def block(self, height: int) -> Block:
        return self.block_by_hash(self._hash_at(height))

    def block_by_hash(self, block_hash: bytes) -> Block:
        node = self.tree.nodes.get(block_hash)
        if node is None:
            raise UsageError(f"no block with hash {block_hash[::-1].hex()}")
        header, body = self._stored(block_hash, f"block {node.height} ({short(block_hash)})")
        try:
            return Block(node.height, BlockHeader.deserialize(header), parse_body(body))
        except (ValueError, TypeError, struct.error, UsageError) as exc:
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

    def check_clock(self, now: int) -> None:
        """Refuse to mine when no valid next block can exist at `now`: its time must be above
        the median time past and at most max_future ahead of the clock."""
        earliest = self.min_next_time()
        if earliest > now + self.params.max_future:
            wait = earliest - (now + self.params.max_future)
            raise ChainError(
                f"{self.path}: the chain's recent blocks are ahead of this computer's clock: the next "
                f"block needs a time of at least {earliest} ({_utc(earliest)} UTC), more than "
                f"{self.params.max_future} s ahead of now ({_utc(now)} UTC); fix the clock, or wait "
                f"{wait} s")

    # ------------------------------------------------------------------ writing

    def append(self, header: BlockHeader, txs: Sequence[bytes], now: int | None = None) -> int:
        """Store a block meant to extend the active tip (a miner's); returns its height. Raises
        `StaleBlock` when it was stored but another block at its height came first."""
        result = self.add_block(header, txs, now)
        if not result.active:
            raise StaleBlock(f"block {result.height}: another block at this height was stored "
                             f"first; the chain stays on it", result.height)
        return result.height

    def add_block(self, header: BlockHeader, txs: Sequence[bytes], now: int | None = None,
                  body_check: Callable[[int], None] | None = None) -> AddResult:
        """Validate a block against its own ancestors and store it on whichever branch it
        extends, switching the active chain to it when it has the most work. Blocks stored by
        other processes are picked up first. Raises `UnknownParent`, or `InvalidBlock` with the
        reason (the block is kept, marked invalid, when its proof of work was real and it cannot
        be a mutated copy of a valid block).

        `body_check(height)` adds rules of the caller's (the node's checks of a wire-format
        block) after the chain's own and before anything is stored; it raises `InvalidBlock`."""
        if self.damage:
            raise ChainError(f"{self.path}: {self.damage}; run 'miner chain verify'")
        if self.readonly:
            raise ChainError(f"{self.path}: opened read-only")
        clock = int(_time.time()) if now is None else now
        block_hash = header.hash()
        try:
            with _transaction(self._conn):
                self._catch_up()
                result = self._add_locked(header, txs, block_hash, clock, body_check)
        except sqlite3.OperationalError as exc:
            # Disk full, read-only, I/O error: the transaction was rolled back, nothing stored;
            # the index is read back from the file in case memory ran ahead of it.
            self._load_index()
            raise ChainError(f"{self.path}: block {short(block_hash)} could not be stored ({exc}); "
                             f"the chain is unchanged") from None
        # Only once committed: listeners hear of the switch, the caller of the invalid block.
        if result.change is not None:
            for listener in list(self.listeners):
                listener(result.change)
        if result.invalid:
            raise InvalidBlock(result.invalid, result.height, result.reason)
        return result

    def test_block(self, header: BlockHeader, txs: Sequence[bytes], now: int | None = None,
                   body_check: Callable[[int], None] | None = None) -> str | None:
        """A block proposal's verdict (BIP 23), as Bitcoin Core's TestBlockValidity gives it:
        None when the block would be valid on the active tip but for its proof of work, else
        the reject reason. Nothing is stored; a block not built on the tip is not judged."""
        if self.damage:
            raise ChainError(f"{self.path}: {self.damage}; run 'miner chain verify'")
        self._catch_up()
        tree = self.tree
        known = tree.nodes.get(header.hash())
        if known is not None:
            return "duplicate" if known.valid else "duplicate-invalid"
        if header.prev_hash != tree.tip.hash:
            return "inconclusive-not-best-prevblk"
        times, bits = tree.history(tree.tip)
        height = tree.tip.height + 1
        try:
            check_block(self.params, self.rule, height, header, txs, tree.tip.hash, times, bits,
                        int(_time.time()) if now is None else now, check_pow=False)
            if body_check is not None:
                body_check(height)
        except InvalidBlock as exc:
            return exc.reason
        return None

    def _catch_up(self) -> None:
        """Inside the write lock: reload the index if another process stored blocks."""
        last = self._conn.execute("SELECT max(seq) FROM blocks").fetchone()[0]
        if last != self.tree.next_seq - 1:
            self._load_index()
            if self.damage:
                raise ChainError(f"{self.path}: {self.damage}; run 'miner chain verify'")

    def _add_locked(self, header: BlockHeader, txs: Sequence[bytes], block_hash: bytes,
                    now: int, body_check: Callable[[int], None] | None = None) -> AddResult:
        tree = self.tree
        known = tree.nodes.get(block_hash)
        if known is not None:
            if not known.valid:
                raise InvalidBlock(f"block {known.height} ({short(block_hash)}) is already stored as "
                                   f"invalid: {known.status}", known.height, "duplicate-invalid")
            return AddResult(block_hash, known.height, tree.is_active(known), None)
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
            check_block(self.params, self.rule, height, header, txs, parent.hash, times, bits, now)
            if body_check is not None:
                body_check(height)
        except InvalidBlock as exc:
            refused_unstored = (exc.reason in MUTATED or exc.reason in HEADER_RULES
                                or not self._worth_keeping(header, block_hash, height, times, bits, now))
            if refused_unstored:
                raise
            status, reason = str(exc), exc.reason
        node = tree.make_node(block_hash, parent.hash, header.time, header.bits, status)
        tree.add(node)
        try:
            self._conn.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                               (node.seq, block_hash, height, status, header.serialize(),
                                serialize_body(txs)))
            switch = tree.better_than_tip(node)
            if switch:
                side = tree.branch(node)
                fork = height - len(side)
                self._conn.execute("DELETE FROM active WHERE height > ?", (fork,))
                self._conn.executemany("INSERT INTO active VALUES (?, ?)",
                                       [(n.height, n.hash) for n in side])
        except BaseException:
            tree.discard(node)
            raise
        if status:
            return AddResult(block_hash, height, False, None, status, reason)
        return AddResult(block_hash, height, switch, tree.reorg_to(node) if switch else None)

    def _worth_keeping(self, header: BlockHeader, block_hash: bytes, height: int,
                       times: Sequence[int], bits: Sequence[int], now: int) -> bool:
        """An invalid block is stored (marked, so its descendants are refused at once) only if
        it could not be made cheaply: its hash meets the bits its branch demands. A block too
        far in the future is refused but not marked: it may become valid later."""
        if header.time > now + self.params.max_future:
            return False
        demanded = self.rule.next_bits(height, times, bits)
        return proof_of_work_error(block_hash, demanded, self.params.pow_limit) is None

    def refresh(self) -> None:
        """Pick up blocks stored by other processes."""
        self._load_index()

    # ------------------------------------------------------------------ verification

    def iter_raw(self, from_height: int = 0) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """(height, hash, header, body) of the active chain from `from_height`."""
        yield from self._conn.execute(self._layout.active_rows, (from_height,))

    def verify(self, now: int | None = None, from_height: int = 0) -> int:
        """Re-validate every stored block on every branch (or, from `from_height`, the active
        chain only, against the index below it); returns the active chain's height.

        Raises `InvalidBlock` naming the first bad block by height and hash. Blocks are judged
        against their own ancestors as stored, so one damaged block is named, not its children;
        the active chain must then be the most-work valid one.
        """
        clock = int(_time.time()) if now is None else now
        stray = self._conn.execute("SELECT min(height) FROM blocks WHERE height < 0").fetchone()[0]
        if stray is not None:
            raise InvalidBlock(f"block {stray}: a stray row below genesis", stray)
        if from_height > 0:
            return self._verify_active(from_height, clock)
        seen = BlockTree()
        stored_active = dict(self._conn.execute(self._layout.active))  # height -> hash
        genesis, genesis_body = self._expected_genesis()
        for seq, stored_hash, height, status, raw_header, raw_body in self._conn.execute(self._layout.all_rows):
            where = f"block {height} ({short(stored_hash) if isinstance(stored_hash, bytes) else '?'})"
            if not seen.active:
                if height != 0 or raw_header != genesis or raw_body != genesis_body:
                    raise InvalidBlock("block 0: genesis does not match the chain parameters", 0)
                if stored_hash != sha256d(raw_header):
                    raise InvalidBlock("block 0: stored hash does not match its header", 0)
                t, b = struct.unpack_from("<II", raw_header, 68)
                seen.add(seen.make_node(stored_hash, GENESIS_PARENT, t, b, seq=seq))
                continue
            header, txs = _decode(where, height, raw_header, raw_body)
            # Most blocks extend the verified active chain: judged against its lists directly,
            # without building a Node for the block or its parent.
            on_tip = header.prev_hash == seen.active[-1]
            if on_tip:
                if height != len(seen.active):
                    raise InvalidBlock(f"{where}: stored at the wrong height (its parent is block "
                                       f"{len(seen.active) - 1})", height)
                times, bits = seen.times, seen.bits
            else:
                parent = seen.nodes.get(header.prev_hash)
                if parent is None:
                    if stored_active.get(height - 1, header.prev_hash) == header.prev_hash:
                        raise InvalidBlock(f"block {height - 1}: missing from the chain file ({where} "
                                           f"names it as its parent)", height - 1)
                    raise InvalidBlock(f"{where}: previous hash does not link to a stored block", height)
                if parent.height != height - 1:
                    raise InvalidBlock(f"{where}: stored at the wrong height (its parent is block "
                                       f"{parent.height})", height)
                bad = seen.invalid_ancestor(parent)
                if bad is not None:
                    raise InvalidBlock(f"{where}: descends from invalid block {bad.height} "
                                       f"({short(bad.hash)})", height)
                times, bits = seen.history(parent)
            if status:
                block_hash = header.hash()  # stored as invalid: its reason is not re-derived
            else:
                try:
                    block_hash = check_block(self.params, self.rule, height, header, txs,
                                             header.prev_hash, times, bits, clock)
                except InvalidBlock as exc:
                    raise InvalidBlock(f"{exc} (hash {short(header.hash())})", height) from None
            if stored_hash != block_hash:
                raise InvalidBlock(f"{where}: stored hash does not match its header", height)
            if on_tip and not status and stored_active.get(height) == block_hash:
                seen.extend(block_hash, header.time, header.bits, seq)  # the stored active chain
            else:
                seen.add(seen.make_node(block_hash, header.prev_hash, header.time, header.bits,
                                        status, seq=seq))
        if not seen.active:
            raise InvalidBlock("block 0: chain has no genesis block", 0)
        return self._check_active_is_best(seen, stored_active)

    def _check_active_is_best(self, seen: BlockTree, stored: dict[int, bytes]) -> int:
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

    def _verify_active(self, from_height: int, clock: int) -> int:
        """The active chain from `from_height`, judged against the index below it."""
        times: list[int] = self.times[:from_height]  # slices: copies the pass appends to
        bits: list[int] = self.bits[:from_height]
        parent_hash = self.tree.active[from_height - 1]
        expected_height = from_height
        for height, stored_hash, raw_header, raw_body in self.iter_raw(from_height):
            if height != expected_height:
                raise InvalidBlock(f"block {expected_height}: missing from the chain file",
                                   expected_height)
            expected_height += 1
            header, txs = _decode(f"block {height}", height, raw_header, raw_body)
            block_hash = check_block(self.params, self.rule, height, header, txs, parent_hash,
                                     times, bits, clock)
            if stored_hash != block_hash:
                raise InvalidBlock(f"block {height}: stored hash does not match its header", height)
            times.append(header.time)
            bits.append(header.bits)
            parent_hash = block_hash
        return expected_height - 1


def _decode(where: str, height: int, raw_header: bytes, raw_body: bytes) -> tuple[BlockHeader, list[bytes]]:
    """A stored block's header and transactions, or `InvalidBlock` naming it (`where`)."""
    try:
        return BlockHeader.deserialize(raw_header), parse_body(raw_body)
    except (ValueError, TypeError, struct.error, ChainError, UsageError) as exc:
        raise InvalidBlock(f"{where}: cannot be decoded ({exc})", height) from None


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Statements one by one: `executescript` would commit the open transaction first."""
    for stmt in script.strip().split(";"):
        if stmt.strip():
            conn.execute(stmt)


def check_chain_path(p: Path, must_exist: bool) -> None:
    """Usage errors about the path itself, before anything is opened or compiled: missing, not
    a regular file (/dev/null, a folder), or in a folder that does not exist."""
    try:
        exists = p.exists()
        if exists and not p.is_file():
            raise UsageError(f"{p}: not a regular file; give a chain file path")
    except OSError as exc:
        raise UsageError(f"{p}: {_os_reason(exc)}") from None
    if must_exist and not exists:
        raise UsageError(f"{p}: no such chain file")
    if not exists and not p.parent.is_dir():
        raise UsageError(f"{p.parent}: no such directory")


def check_creatable(p: Path) -> None:
    """Fail now if a new chain file cannot be made at `p` (before a long compile, say)."""
    check_chain_path(p, must_exist=False)
    if not os.access(p.parent, os.W_OK) or _read_only_fs(p):
        raise ChainError(f"{p}: cannot create the chain file (the folder {p.parent} is not writable)")


def _read_only_fs(p: Path) -> bool:
    try:
        return bool(os.statvfs(p.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return exc.strerror or str(exc)


def _uri_path(p: Path) -> str:
    from urllib.parse import quote
    return quote(str(p.resolve()))


def _utc(t: int) -> str:
    return _time.strftime("%Y-%m-%d %H:%M:%S", _time.gmtime(t))


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
