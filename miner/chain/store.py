"""The chain file: a SQLite database, its formats, atomic creation, and `ChainStore`, which owns
the connection and runs every statement the chain makes (no SQL lives anywhere else).

Each change (a block stored, and the active chain switched with it) is one SQLite transaction in
WAL mode with `synchronous=FULL`: a process killed at any instant leaves the old state or the
new one, never a mix. A file is created aside and linked into place complete, so it either does
not exist or is a valid chain. Readers open the file read-only and work on read-only media.
Files of formats 1 and 2 (one block per height) are read as they are, and upgraded in place, in
one transaction, when a writer opens them.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from miner.chain.files import (
    check_chain_path,
    os_reason,
    read_only_fs,
    remove_leftovers,
    with_journal,
)
from miner.consensus.params import ChainParams
from miner.errors import ChainError, InvalidInput
from miner.primitives.hashes import display_hex
from miner.primitives.serialize import read_varint, varint

FORMAT_NAME = "pow-miner-chain"
# Format 2: genesis commits to the chain parameters (ChainParams.genesis_txs), so an edited
# parameter no longer matches the stored genesis. Format 3: a block tree (every branch kept, an
# `active` table indexing the active chain by height). Formats 1 and 2 keep opening.
FORMAT_VERSION = 3
SUPPORTED_VERSIONS = ("1", "2", "3")

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
class Layout:
    """The queries that read one storage layout."""

    index: str  # seq, hash, height, status, header: every block, parents first
    active: str  # height, hash of the active chain, by height
    active_rows: str  # height, hash, header, body of the active chain from a height
    all_rows: str  # seq, hash, height, status, header, body, parents first


TREE = Layout(
    index="SELECT seq, hash, height, status, header FROM blocks ORDER BY seq",
    active="SELECT height, hash FROM active ORDER BY height",
    active_rows="SELECT a.height, b.hash, b.header, b.body FROM active a JOIN blocks b ON b.hash = a.hash "
                "WHERE a.height >= ? ORDER BY a.height",
    all_rows="SELECT seq, hash, height, status, header, body FROM blocks ORDER BY seq",
)
LIST = Layout(
    index="SELECT height, hash, height, '', header FROM blocks WHERE height >= 0 ORDER BY height",
    active="SELECT height, hash FROM blocks WHERE height >= 0 ORDER BY height",
    active_rows="SELECT height, hash, header, body FROM blocks WHERE height >= ? ORDER BY height",
    all_rows="SELECT height, hash, height, '', header, body FROM blocks WHERE height >= 0 ORDER BY height",
)


def layout(format_version: int) -> Layout:
    return TREE if format_version >= 3 else LIST


def short(block_hash: object) -> str:
    """A block hash as users see it (display order), cut to 16 digits for messages; a damaged
    file's hash column may hold anything, which is named by its SQLite type instead."""
    if isinstance(block_hash, bytes) and len(block_hash) == 32:
        return display_hex(block_hash)[:16]
    return f"<{sqlite_type(block_hash)}, not a hash>"


def sqlite_type(value: object) -> str:
    return {bytes: "BLOB", str: "TEXT", int: "INTEGER", float: "REAL", type(None): "NULL"}.get(
        type(value), type(value).__name__)


# --------------------------------------------------------------------------- bodies

def serialize_body(txs: Sequence[bytes]) -> bytes:
    """Body on disk: CompactSize count, then each transaction length-prefixed."""
    return varint(len(txs)) + b"".join(varint(len(t)) + t for t in txs)


def parse_body(data: bytes) -> list[bytes]:
    """Inverse of `serialize_body`; raises ValueError on any inconsistency."""
    if data[:1] == b"\x01":  # one transaction, as every block a miner of this chain makes
        n, pos = read_varint(data, 1)
        if pos + n == len(data):
            return [data[pos:]]
    count, pos = read_varint(data, 0)
    if count == 0 or count > len(data):
        raise ValueError("bad transaction count")
    txs = []
    for _ in range(count):
        n, pos = read_varint(data, pos)
        if pos + n > len(data):
            raise ValueError("truncated transaction")
        txs.append(data[pos:pos + n])
        pos += n
    if pos != len(data):
        raise ValueError("trailing bytes after the last transaction")
    return txs


# --------------------------------------------------------------------------- connections

def _connect(path: Path) -> sqlite3.Connection:
    """A writing connection. SQLite keeps its journal (`-wal`, `-shm`) beside the name it is
    given, so it is given the real file's name: every symlink to a chain shares one journal."""
    conn = sqlite3.connect(str(path.resolve()), timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


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
        if os.access(path.parent, os.W_OK) and not read_only_fs(path):
            raise
    return sqlite3.connect(f"file:{_uri_path(path)}?immutable=1", uri=True, isolation_level=None)


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.conn.execute("ROLLBACK")
            return
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            # A COMMIT that failed (disk full, I/O error) may leave the transaction open: end
            # it, so the caller reads the file as it is and the next BEGIN works.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Statements one by one: `executescript` would commit the open transaction first."""
    for stmt in script.strip().split(";"):
        if stmt.strip():
            conn.execute(stmt)


# --------------------------------------------------------------------------- the store

class ChainStore:
    """One chain file's connection and every statement run on it: the chain (`chain.Chain`)
    decides what to store and which branch is active, and asks this class to read and write the
    rows. `conn` is public for tests that plant damage; product code goes through the methods."""

    def __init__(self, path: Path, conn: sqlite3.Connection, format_version: int = FORMAT_VERSION):
        self.path = path
        self.conn = conn
        self.format_version = format_version

    @property
    def _rows(self) -> Layout:
        return layout(self.format_version)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open_readonly(cls, path: Path) -> ChainStore:
        """A store that never writes; its format is known once `read_meta` has run."""
        return cls(path, _connect_readonly(path))

    @classmethod
    def open_writer(cls, path: Path, format_version: int) -> ChainStore:
        return cls(path, _connect(path), format_version)

    def close(self) -> None:
        self.conn.close()

    def transaction(self) -> transaction:
        """One SQLite transaction (BEGIN IMMEDIATE: the write lock), rolled back on any exception."""
        return transaction(self.conn)

    def check_writable(self) -> None:
        """Raises sqlite3.OperationalError now if the file cannot take the write lock."""
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("ROLLBACK")

    @staticmethod
    def create(p: Path, params: ChainParams) -> bool:
        """Build a new chain file aside and link it into place complete: a process killed at any
        moment leaves either no chain file or a valid one. False if another process linked its
        file first (then the caller opens theirs)."""
        check_chain_path(p, must_exist=False)
        if p.exists() and p.stat().st_size > 0:
            raise InvalidInput(f"{p}: already exists; open it instead of creating it")
        remove_leftovers(p.parent, f".{p.name}.creating-")
        tmp = p.with_name(f".{p.name}.creating-{os.getpid()}-{time.monotonic_ns()}")
        try:
            _write_new(tmp, params)
            try:
                os.link(tmp, p)  # atomic, and never replaces a file another process linked first
            except FileExistsError:
                if p.stat().st_size > 0:
                    return False  # a concurrent `miner mine` created it: use theirs
                os.replace(tmp, p)  # an empty file (touched by hand) is no chain: replace it
        except sqlite3.Error as exc:
            raise ChainError(f"{p}: cannot create the chain file ({exc})") from None
        except OSError as exc:
            raise ChainError(f"{p}: cannot create the chain file ({os_reason(exc)})") from None
        finally:
            for leftover in with_journal(tmp):
                try:
                    leftover.unlink()
                except OSError:
                    pass
        return True

    def upgrade(self, committed: bool) -> None:
        """Formats 1 and 2 to the block tree, in one transaction: a kill leaves the old file."""
        with transaction(self.conn):
            version = self.conn.execute("SELECT value FROM meta WHERE key='version'").fetchone()[0]
            if version != str(FORMAT_VERSION):  # else another writer upgraded it meanwhile
                _execute_script(self.conn, _UPGRADE_FROM_LIST)
                self.conn.execute("UPDATE meta SET value=? WHERE key='version'", (str(FORMAT_VERSION),))
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('genesis', ?)",
                                  ("committed" if committed else "plain",))
        self.format_version = FORMAT_VERSION

    def read_meta(self) -> tuple[ChainParams, int, bool]:
        """The stored parameters, the format version and whether genesis commits to the
        parameters; the store reads the file's layout from then on."""
        p = self.path
        try:
            rows = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            raise ChainError(f"{p}: not a miner chain file ({exc})") from None
        if rows.get("format") != FORMAT_NAME:
            raise ChainError(f"{p}: not a miner chain file (no '{FORMAT_NAME}' marker)")
        if rows.get("version") not in SUPPORTED_VERSIONS:
            raise ChainError(f"{p}: chain format version {str(rows.get('version'))[:20]!r} is not supported")
        try:
            params = ChainParams.from_json(rows["params"])
        except RecursionError:  # a stored value nested past any sane depth
            raise ChainError(f"{p}: chain parameters are damaged (nested too deeply to read)") from None
        except (KeyError, ValueError, TypeError, AttributeError, InvalidInput) as exc:
            raise ChainError(f"{p}: chain parameters are damaged ({exc})") from None
        version = int(rows["version"])
        self.format_version = version
        # Genesis commits to the parameters from format 2 on; an upgraded format 1 file says so.
        committed = version == 2 or (version >= 3 and rows.get("genesis") != "plain")
        return params, version, committed

    # ------------------------------------------------------------------ reading

    def stray_height(self) -> int | None:
        """The lowest height below genesis a row is stored at (only damage puts one there)."""
        return self.conn.execute("SELECT min(height) FROM blocks WHERE height < 0").fetchone()[0]

    def active_hashes(self) -> Iterable[tuple[object, object]]:
        """(height, hash) of the active chain by height, as stored (a damaged file's columns may
        hold anything)."""
        return self.conn.execute(self._rows.active)

    def index_rows(self) -> Iterable[tuple]:
        """(seq, hash, height, status, header) of every block, parents first."""
        return self.conn.execute(self._rows.index)

    def all_blocks(self) -> Iterable[tuple]:
        """(seq, hash, height, status, header, body) of every block, parents first."""
        return self.conn.execute(self._rows.all_rows)

    def active_blocks(self, from_height: int) -> Iterable[tuple]:
        """(height, hash, header, body) of the active chain from `from_height` on, by height."""
        return self.conn.execute(self._rows.active_rows, (from_height,))

    def block_row(self, block_hash: bytes) -> tuple[bytes, bytes] | None:
        """A stored block's header and body bytes (None: not stored)."""
        row = self.conn.execute("SELECT header, body FROM blocks WHERE hash=?", (block_hash,)).fetchone()
        return None if row is None else tuple(row)

    def header_row(self, block_hash: bytes) -> bytes | None:
        row = self.conn.execute("SELECT header FROM blocks WHERE hash=?", (block_hash,)).fetchone()
        return None if row is None else row[0]

    def active_headers(self, first: int, last: int) -> list[bytes]:
        """The active chain's headers from height `first` to `last`, in one query."""
        rows = self.conn.execute("SELECT b.header FROM active a JOIN blocks b ON b.hash = a.hash "
                                 "WHERE a.height BETWEEN ? AND ? ORDER BY a.height", (first, last))
        return [r[0] for r in rows]

    def last_seq(self) -> int | None:
        """The newest block's arrival number: another writer stored blocks when it moved."""
        return self.conn.execute("SELECT max(seq) FROM blocks").fetchone()[0]

    def block_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM blocks WHERE height >= 0").fetchone()[0]

    # ------------------------------------------------------------------ writing (inside `transaction`)

    def insert_block(self, seq: int, block_hash: bytes, height: int, status: str, header: bytes,
                     txs: Sequence[bytes]) -> None:
        self.conn.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                          (seq, block_hash, height, status, header, serialize_body(txs)))

    def move_active(self, fork: int, branch: Iterable[tuple[int, bytes]]) -> None:
        """The active chain keeps heights up to `fork` and goes on with `branch` (height, hash)."""
        self.conn.execute("DELETE FROM active WHERE height > ?", (fork,))
        self.conn.executemany("INSERT INTO active VALUES (?, ?)", branch)


def _write_new(tmp: Path, params: ChainParams) -> None:
    """A complete new chain file at `tmp`: schema, parameters and genesis, one transaction."""
    conn = _connect(tmp)
    try:
        genesis = params.genesis_header(committed=True)
        with transaction(conn):
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


def _uri_path(p: Path) -> str:
    return quote(str(p.resolve()))
