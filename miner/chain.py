"""The embedded chain: blocks in a SQLite file, validated on append and on demand.

A block is an 80-byte header plus a body of raw transactions whose merkle root is in the header.
Each append is one SQLite transaction in WAL mode with `synchronous=FULL`, so a process killed at
any point leaves every block it reported as appended on disk and nothing half-written.

The same `check_block` serves `append` (against the stored tip) and `verify` (a fresh pass from
genesis over what is stored), so the two can never disagree about what a valid block is.

A file is created aside and linked into place complete, so it either does not exist or is a
valid chain. A writer (`miner mine`) checks what it builds on before it starts (`startup_check`);
readers open the file read-only and work on read-only media.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import struct
import time as _time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .errors import ChainError, InvalidBlock, UsageError
from .header import HEADER_SIZE, BlockHeader, proof_of_work_error, sha256d
from .params import ChainParams
from .retarget import RetargetRule
from .tx import merkle_root, parse_body, serialize_body, txid

FORMAT_NAME = "pow-miner-chain"
# Format 2: genesis commits to the chain parameters (ChainParams.genesis_txs), so an edited
# parameter no longer matches the stored genesis. Format 1 files keep opening and validating.
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = ("1", "2")
MTP_SPAN = 11  # blocks in Bitcoin's median-time-past
# Blocks a writer re-validates in full when it opens a chain (like Bitcoin Core's -checkblocks);
# every header's link to its parent is checked too. The whole open takes 0.20 s on a
# 100,000-block chain (python -m miner.bench.chain_verify).
CHECK_BLOCKS = 1000

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE blocks (
    height INTEGER PRIMARY KEY,
    hash   BLOB NOT NULL,
    header BLOB NOT NULL,
    body   BLOB NOT NULL
);
"""


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


def check_block(params: ChainParams, rule: RetargetRule, height: int, header: BlockHeader,
                txs: Sequence[bytes], parent_hash: bytes, times: Sequence[int],
                bits: Sequence[int], now: int | None) -> bytes:
    """Validate a non-genesis block against its ancestors; returns its hash or raises."""
    if header.prev_hash != parent_hash:
        raise InvalidBlock(f"block {height}: previous hash does not link to block {height - 1}",
                           height)
    expected_bits = rule.next_bits(height, times, bits)
    if header.bits != expected_bits:
        raise InvalidBlock(f"block {height}: bits 0x{header.bits:08x} but the {rule.name} rule "
                           f"demands 0x{expected_bits:08x}", height)
    block_hash = header.hash()
    pow_error = proof_of_work_error(block_hash, header.bits, params.pow_limit)
    if pow_error:
        raise InvalidBlock(f"block {height}: proof of work fails: {pow_error}", height)
    mtp = median_time_past(times, height)
    if header.time <= mtp:
        raise InvalidBlock(f"block {height}: time {header.time} is not after the median time "
                           f"past {mtp}", height)
    if now is not None and header.time > now + params.max_future:
        raise InvalidBlock(f"block {height}: time {header.time} is more than "
                           f"{params.max_future} s in the future", height)
    if not txs:
        raise InvalidBlock(f"block {height}: no transactions", height)
    if merkle_root([txid(t) for t in txs]) != header.merkle_root:
        raise InvalidBlock(f"block {height}: merkle root does not match its transactions", height)
    return block_hash


class Chain:
    """A chain stored in one SQLite file. Not thread-safe: one `Chain` per thread."""

    def __init__(self, path: Path, conn: sqlite3.Connection, params: ChainParams,
                 format_version: int = FORMAT_VERSION, readonly: bool = False):
        self.path = path
        self._conn = conn
        self.params = params
        self.format_version = format_version
        self.readonly = readonly
        self.rule = params.retarget_rule()
        self.times: list[int] = []
        self.bits: list[int] = []
        self.tip_hash = b""
        self._load_index()

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
                    for stmt in _SCHEMA.strip().split(";"):
                        if stmt.strip():
                            conn.execute(stmt)
                    conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                        ("format", FORMAT_NAME), ("version", str(FORMAT_VERSION)),
                        ("params", params.to_json())])
                    conn.execute("INSERT INTO blocks VALUES (0, ?, ?, ?)",
                                 (genesis.hash(), genesis.serialize(),
                                  serialize_body(params.genesis_txs(committed=True))))
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
        so a damaged file is refused without a single byte of it changed."""
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
            params, version = cls._read_meta(p, probe)
            chain = cls(p, probe, params, version, readonly=True)
            if readonly:
                return chain
            chain.startup_check()
        except BaseException:
            probe.close()
            raise
        probe.close()
        try:
            conn = cls._connect(p)
            writable = cls(p, conn, params, version)
        except sqlite3.Error as exc:
            raise ChainError(f"{p}: chain file cannot be opened for writing ({exc})") from None
        writable.check_writable()
        return writable

    @staticmethod
    def _read_meta(p: Path, conn: sqlite3.Connection) -> tuple[ChainParams, int]:
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
        return params, int(rows["version"])

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
        """Times and bits of every block, kept in memory for the retarget and MTP rules.

        A gap, a stray row, a header of the wrong size or a header that does not link to the
        stored hash of its parent stops the index there and marks the chain damaged: it still
        opens read-only (so `verify` and `info` can name the block) but refuses appends.
        """
        times, bits = [], []
        last_hash = b""
        self.damage = None
        try:
            stray = self._conn.execute("SELECT min(height) FROM blocks WHERE height < 0").fetchone()[0]
            if stray is not None:
                self.damage = f"stray block row at height {stray}"
            for height, block_hash, header in self._conn.execute(
                    "SELECT height, hash, header FROM blocks WHERE height >= 0 ORDER BY height"):
                if height != len(times):
                    self.damage = f"block {len(times)} is missing"
                    break
                if not isinstance(header, bytes) or len(header) != HEADER_SIZE:
                    self.damage = f"block {height} has a damaged header"
                    break
                if height > 0 and header[4:36] != last_hash:
                    self.damage = f"block {height} does not link to the stored hash of block {height - 1}"
                    break
                t, b = struct.unpack_from("<II", header, 68)
                times.append(t)
                bits.append(b)
                last_hash = block_hash
        except sqlite3.DatabaseError as exc:
            raise ChainError(f"{self.path}: chain file is damaged ({exc})") from None
        if not times:
            raise ChainError(f"{self.path}: chain has no genesis block"
                             + (f" ({self.damage})" if self.damage else ""))
        self.times, self.bits, self.tip_hash = times, bits, last_hash

    def startup_check(self, blocks: int = CHECK_BLOCKS) -> None:
        """What a writer checks before it builds on the chain, refusing with the first problem:
        the index (every header links to its parent's stored hash), genesis against the stored
        parameters (which genesis commits to, from format 2), and the last `blocks` blocks in
        full, stored hashes included, so the tip that new blocks would extend is the real one.
        The whole chain is re-validated by `verify`."""
        if self.damage:
            raise ChainError(f"{self.path}: {self.damage}; run 'miner chain verify'")
        row = self._conn.execute("SELECT header, body FROM blocks WHERE height = 0").fetchone()
        if row is None or tuple(row) != self._expected_genesis():
            raise ChainError(f"{self.path}: block 0: genesis does not match the chain parameters "
                             f"(the parameters or genesis were edited); the chain is refused")
        try:
            self.verify(from_height=max(1, self.height - blocks + 1))
        except InvalidBlock as exc:
            raise ChainError(f"{self.path}: {exc}; the chain is refused") from None

    def _expected_genesis(self) -> tuple[bytes, bytes]:
        """Genesis header and body as the stored parameters make them (committing to the
        parameters from format 2 on)."""
        committed = self.format_version >= 2
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
    def height(self) -> int:
        return len(self.times) - 1

    def _row(self, columns: str, height: int):
        if not 0 <= height <= self.height:
            raise UsageError(f"no block at height {height} (tip is {self.height})")
        return self._conn.execute(f"SELECT {columns} FROM blocks WHERE height=?", (height,)).fetchone()

    def header(self, height: int) -> BlockHeader:
        row = self._row("header", height)
        if row is None:
            raise UsageError(f"no block at height {height} (tip is {self.height})")
        return BlockHeader.deserialize(row[0])

    def block(self, height: int) -> Block:
        row = self._row("header, body", height)
        if row is None:
            raise UsageError(f"no block at height {height} (tip is {self.height})")
        try:
            return Block(height, BlockHeader.deserialize(row[0]), parse_body(row[1]))
        except (ValueError, TypeError, struct.error, UsageError) as exc:
            raise ChainError(f"block {height} cannot be decoded ({exc}); run 'miner chain verify'") from None

    def tip(self) -> BlockHeader:
        return self.header(self.height)

    def next_bits(self) -> int:
        """Bits the next block must carry."""
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
        """Validate and store the next block in its own transaction; returns its height."""
        if self.damage:
            raise ChainError(f"{self.path}: {self.damage}; run 'miner chain verify'")
        if self.readonly:
            raise ChainError(f"{self.path}: opened read-only")
        height = self.height + 1
        clock = int(_time.time()) if now is None else now
        block_hash = check_block(self.params, self.rule, height, header, txs, self.tip_hash,
                                 self.times, self.bits, clock)
        try:
            with _transaction(self._conn):
                self._conn.execute("INSERT INTO blocks VALUES (?, ?, ?, ?)",
                                   (height, block_hash, header.serialize(), serialize_body(txs)))
        except sqlite3.IntegrityError:
            # Another process appended at this height first: our block is stale, not invalid.
            self._load_index()
            raise InvalidBlock(f"block {height}: another block was appended at this height first",
                               height) from None
        except sqlite3.OperationalError as exc:
            # Disk full, read-only, I/O error: the transaction was rolled back, nothing stored.
            raise ChainError(f"{self.path}: block {height} could not be stored ({exc}); the chain "
                             f"is unchanged") from None
        self.times.append(header.time)
        self.bits.append(header.bits)
        self.tip_hash = block_hash
        return height

    def refresh(self) -> None:
        """Pick up blocks appended by other processes."""
        self._load_index()

    # ------------------------------------------------------------------ verification

    def iter_raw(self, from_height: int = 0) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        yield from self._conn.execute(
            "SELECT height, hash, header, body FROM blocks WHERE height >= ? ORDER BY height", (from_height,))

    def verify(self, now: int | None = None, from_height: int = 0) -> int:
        """Re-validate every stored block from genesis (or from `from_height`, against the index
        below it); returns the height verified to.

        Raises `InvalidBlock` naming the first bad block. Blocks are judged against the times and
        bits of the blocks before them as stored, so one damaged block is named, not its children.
        """
        clock = int(_time.time()) if now is None else now
        stray = self._conn.execute("SELECT min(height) FROM blocks WHERE height < 0").fetchone()[0]
        if stray is not None:
            raise InvalidBlock(f"block {stray}: a stray row below genesis", stray)
        times: list[int] = self.times[:from_height]  # slices: copies the pass appends to
        bits: list[int] = self.bits[:from_height]
        parent_hash = b""
        if from_height > 0:
            row = self._conn.execute("SELECT hash FROM blocks WHERE height=?", (from_height - 1,)).fetchone()
            parent_hash = row[0] if row else b""
        genesis, genesis_body = self._expected_genesis()
        expected_height = from_height
        for height, stored_hash, raw_header, raw_body in self.iter_raw(from_height):
            if height != expected_height:
                raise InvalidBlock(f"block {expected_height}: missing from the chain file",
                                   expected_height)
            expected_height += 1
            if height == 0:
                if raw_header != genesis or raw_body != genesis_body:
                    raise InvalidBlock("block 0: genesis does not match the chain parameters", 0)
                block_hash = sha256d(raw_header)
            else:
                try:
                    header = BlockHeader.deserialize(raw_header)
                    txs = parse_body(raw_body)
                except (ValueError, TypeError, struct.error, ChainError, UsageError) as exc:
                    raise InvalidBlock(f"block {height}: cannot be decoded ({exc})", height) from None
                block_hash = check_block(self.params, self.rule, height, header, txs, parent_hash,
                                         times, bits, clock)
            if stored_hash != block_hash:
                raise InvalidBlock(f"block {height}: stored hash does not match its header", height)
            t, b = struct.unpack_from("<II", raw_header, 68)
            times.append(t)
            bits.append(b)
            parent_hash = block_hash
        if expected_height == 0:
            raise InvalidBlock("block 0: chain has no genesis block", 0)
        return expected_height - 1


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
