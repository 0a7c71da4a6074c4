"""The chain file: a SQLite database, its formats, atomic creation and the index read from it.

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
import struct
import time
from collections.abc import Sequence
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
from miner.chain.index import BlockTree
from miner.consensus.params import ChainParams
from miner.errors import ChainError, InvalidInput
from miner.primitives.hashes import display_hex, sha256d
from miner.primitives.header import HEADER_SIZE
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

def connect(path: Path) -> sqlite3.Connection:
    """A writing connection. SQLite keeps its journal (`-wal`, `-shm`) beside the name it is
    given, so it is given the real file's name: every symlink to a chain shares one journal."""
    conn = sqlite3.connect(str(path.resolve()), timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
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


# --------------------------------------------------------------------------- creation and formats

def create_file(p: Path, params: ChainParams) -> bool:
    """Build a new chain file aside and link it into place complete: a process killed at any
    moment leaves either no chain file or a valid one. False if another process linked its file
    first (then the caller opens theirs)."""
    check_chain_path(p, must_exist=False)
    if p.exists() and p.stat().st_size > 0:
        raise InvalidInput(f"{p}: already exists; open it instead of creating it")
    remove_leftovers(p.parent, f".{p.name}.creating-")
    tmp = p.with_name(f".{p.name}.creating-{os.getpid()}-{time.monotonic_ns()}")
    try:
        conn = connect(tmp)
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


def upgrade(conn: sqlite3.Connection, committed: bool) -> None:
    """Formats 1 and 2 to the block tree, in one transaction: a kill leaves the old file."""
    with transaction(conn):
        version = conn.execute("SELECT value FROM meta WHERE key='version'").fetchone()[0]
        if version == str(FORMAT_VERSION):
            return  # another writer upgraded it between our check and our lock
        _execute_script(conn, _UPGRADE_FROM_LIST)
        conn.execute("UPDATE meta SET value=? WHERE key='version'", (str(FORMAT_VERSION),))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('genesis', ?)",
                     ("committed" if committed else "plain",))


def read_meta(p: Path, conn: sqlite3.Connection) -> tuple[ChainParams, int, bool]:
    """The stored parameters, the format version and whether genesis commits to the parameters."""
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
    except RecursionError:  # a stored value nested past any sane depth
        raise ChainError(f"{p}: chain parameters are damaged (nested too deeply to read)") from None
    except (KeyError, ValueError, TypeError, AttributeError, InvalidInput) as exc:
        raise ChainError(f"{p}: chain parameters are damaged ({exc})") from None
    version = int(rows["version"])
    # Genesis commits to the parameters from format 2 on; an upgraded format 1 file says so.
    committed = version == 2 or (version >= 3 and rows.get("genesis") != "plain")
    return params, version, committed


# --------------------------------------------------------------------------- the index

def read_index(conn: sqlite3.Connection, rows: Layout) -> tuple[BlockTree, str | None]:
    """Every block's index entry, and the active chain's hashes, times and bits by height, with
    the first damage found (None when there is none).

    A gap in the active chain, a header of the wrong size, an active block that does not link to
    its parent's stored hash, a block stored at a height its place in the tree contradicts, a
    side block whose parent is not stored or whose stored hash is not its header's is damage
    (the active blocks' hashes are checked by their children's links): the chain
    still opens read-only (so `verify` and `info` can name the block) but refuses new blocks.
    The whole index is two table scans: about 0.1 s for 100,000 blocks.
    """
    tree = BlockTree()
    damage: str | None = None
    unpack = struct.Struct("<II").unpack_from
    stray = conn.execute("SELECT min(height) FROM blocks WHERE height < 0").fetchone()[0]
    if stray is not None:
        damage = f"stray block row at height {stray}"
    hashes: list[bytes] = []
    for height, block_hash in conn.execute(rows.active):
        if height != len(hashes):
            damage = damage or f"block {len(hashes)} is missing"
            break
        if not isinstance(block_hash, bytes) or len(block_hash) != 32:
            damage = damage or f"block {height}'s hash in the active chain is {short(block_hash)}"
            break
        hashes.append(block_hash)
    height_of = {h: i for i, h in enumerate(hashes)}
    n = len(hashes)
    times, bits, seqs = [0] * n, [0] * n, [-1] * n
    unlinked = n  # the first active block that does not link to its parent
    side_rows = []
    for seq, block_hash, stored_height, status, header in conn.execute(rows.index):
        i = height_of.get(block_hash)
        if not isinstance(header, bytes) or len(header) != HEADER_SIZE:
            damage = damage or f"block {i if i is not None else '?'} has a damaged header"
            continue
        if i is None or status:
            side_rows.append((seq, block_hash, stored_height, status, header))
            continue
        if stored_height != i:
            damage = damage or f"block {i} is stored with height {stored_height!r:.20}"
        if i and header[4:36] != hashes[i - 1]:
            unlinked = min(unlinked, i)
        times[i], bits[i] = unpack(header, 68)
        seqs[i] = seq
    # Active rows must all be stored, valid and linked; the chain stops at the first that is not.
    good = min(next((i for i, s in enumerate(seqs) if s < 0), n), unlinked)
    if good < n and not damage:
        marked = {h for _, h, _, status, _ in side_rows if status}
        damage = (f"block {good} does not link to the stored hash of block {good - 1}"
                  if good == unlinked else f"block {good} is active but marked invalid"
                  if hashes[good] in marked else f"block {good} is missing")
    tree.load_active(hashes[:good], times[:good], bits[:good], seqs[:good])
    for seq, block_hash, stored_height, status, header in side_rows:
        if block_hash in tree.nodes:
            continue  # an active block also listed as invalid: damage named above
        up = tree.nodes.get(header[4:36])
        if up is None:
            damage = damage or f"side block {short(block_hash)} does not link to a stored parent"
            continue
        if sha256d(header) != block_hash:
            damage = damage or f"side block {short(block_hash)}: stored hash does not match its header"
            continue
        if stored_height != up.height + 1:
            damage = damage or (f"side block {short(block_hash)} is stored with height "
                                f"{stored_height!r:.20}, its place in the tree is {up.height + 1}")
        t, b = unpack(header, 68)
        tree.add(tree.make_node(block_hash, up.hash, t, b, status or "", seq=seq))
    return tree, damage


def journal_files(p: Path) -> tuple[Path, Path]:
    """Where SQLite keeps this file's WAL journal and its index: beside the real file (`connect`)."""
    real = p.resolve()
    return real.with_name(real.name + "-wal"), real.with_name(real.name + "-shm")


def journal_absent(p: Path) -> bool:
    return not any(f.exists() for f in journal_files(p))


def close_reader(conn: sqlite3.Connection, p: Path, journal_was_absent: bool) -> None:
    """Close a connection; where the journal files were absent when it opened, release them."""
    conn.close()
    if journal_was_absent:
        release_journal(p)


def release_journal(p: Path) -> None:
    """Remove the `-wal` and `-shm` a read-only connection had to make, if nobody uses them.

    A connection that may not write cannot remove them: SQLite leaves that to the last writing
    connection to close, which removes them only when it holds the database's exclusive lock, that
    is when no other connection (another process's node, or one in this process) has the file
    open. So a writing connection that writes nothing is opened and closed: SQLite's own check,
    not one of ours, decides. Called only where the files were absent before the read began; where
    the file or its folder may not be written they stay, as SQLite leaves them.
    """
    if journal_absent(p):
        return
    real = p.resolve()
    if not (os.access(real, os.W_OK) and os.access(real.parent, os.W_OK)) or read_only_fs(real):
        return
    try:
        conn = sqlite3.connect(str(real), timeout=5, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # joins the WAL
        finally:
            conn.close()
    except sqlite3.Error:
        pass  # busy or unreadable: the files stay, as SQLite itself would leave them


def _uri_path(p: Path) -> str:
    return quote(str(p.resolve()))
