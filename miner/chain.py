"""The embedded chain: blocks in a SQLite file, validated on append and on demand.

A block is an 80-byte header plus a body of raw transactions whose merkle root is in the header.
Each append is one SQLite transaction in WAL mode with `synchronous=FULL`, so a process killed at
any point leaves every block it reported as appended on disk and nothing half-written.

The same `check_block` serves `append` (against the stored tip) and `verify` (a fresh pass from
genesis over what is stored), so the two can never disagree about what a valid block is.
"""

from __future__ import annotations

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
FORMAT_VERSION = 1
MTP_SPAN = 11  # blocks in Bitcoin's median-time-past

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

    def __init__(self, path: Path, conn: sqlite3.Connection, params: ChainParams):
        self.path = path
        self._conn = conn
        self.params = params
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

    @classmethod
    def create(cls, path: str | os.PathLike, params: ChainParams) -> "Chain":
        p = Path(path)
        if p.exists() and p.stat().st_size > 0:
            raise UsageError(f"{p}: already exists; open it instead of creating it")
        if p.parent and not p.parent.exists():
            raise UsageError(f"{p.parent}: no such directory")
        conn = cls._connect(p)
        genesis = params.genesis_header()
        with _transaction(conn):
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", FORMAT_NAME), ("version", str(FORMAT_VERSION)),
                ("params", params.to_json())])
            conn.execute("INSERT INTO blocks VALUES (0, ?, ?, ?)",
                         (genesis.hash(), genesis.serialize(), serialize_body(params.genesis_txs())))
        return cls(p, conn, params)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Chain":
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"{p}: no such chain file")
        try:
            # Read-only probe first: a file that is not ours must not be turned into a WAL database.
            probe = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
            try:
                rows = dict(probe.execute("SELECT key, value FROM meta").fetchall())
            finally:
                probe.close()
        except sqlite3.DatabaseError as exc:
            raise ChainError(f"{p}: not a miner chain file ({exc})") from None
        if rows.get("format") != FORMAT_NAME:
            raise ChainError(f"{p}: not a miner chain file (no '{FORMAT_NAME}' marker)")
        if rows.get("version") != str(FORMAT_VERSION):
            raise ChainError(f"{p}: chain format version {rows.get('version')} is not supported")
        try:
            params = ChainParams.from_json(rows["params"])
        except (KeyError, ValueError, TypeError, UsageError) as exc:
            raise ChainError(f"{p}: chain parameters are damaged ({exc})") from None
        try:
            return cls(p, cls._connect(p), params)
        except sqlite3.DatabaseError as exc:
            raise ChainError(f"{p}: chain file is damaged ({exc})") from None

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

        A gap or a header of the wrong size stops the index there and marks the chain damaged:
        it still opens (so `verify` can name the block) but refuses appends.
        """
        times, bits = [], []
        last_hash = b""
        self.damage = None
        for height, block_hash, header in self._conn.execute(
                "SELECT height, hash, header FROM blocks ORDER BY height"):
            if height != len(times):
                self.damage = f"block {len(times)} is missing"
                break
            if len(header) != HEADER_SIZE:
                self.damage = f"block {height} has a damaged header"
                break
            t, b = struct.unpack_from("<II", header, 68)
            times.append(t)
            bits.append(b)
            last_hash = block_hash
        if not times:
            raise ChainError(f"{self.path}: chain has no genesis block")
        self.times, self.bits, self.tip_hash = times, bits, last_hash

    # ------------------------------------------------------------------ reading

    @property
    def height(self) -> int:
        return len(self.times) - 1

    def header(self, height: int) -> BlockHeader:
        row = self._conn.execute("SELECT header FROM blocks WHERE height=?", (height,)).fetchone()
        if row is None:
            raise UsageError(f"no block at height {height} (tip is {self.height})")
        return BlockHeader.deserialize(row[0])

    def block(self, height: int) -> Block:
        row = self._conn.execute("SELECT header, body FROM blocks WHERE height=?",
                                 (height,)).fetchone()
        if row is None:
            raise UsageError(f"no block at height {height} (tip is {self.height})")
        return Block(height, BlockHeader.deserialize(row[0]), parse_body(row[1]))

    def tip(self) -> BlockHeader:
        return self.header(self.height)

    def next_bits(self) -> int:
        """Bits the next block must carry."""
        return self.rule.next_bits(self.height + 1, self.times, self.bits)

    def min_next_time(self) -> int:
        """Earliest valid time for the next block (one past the median time past)."""
        return median_time_past(self.times, self.height + 1) + 1

    # ------------------------------------------------------------------ writing

    def append(self, header: BlockHeader, txs: Sequence[bytes], now: int | None = None) -> int:
        """Validate and store the next block in its own transaction; returns its height."""
        if self.damage:
            raise ChainError(f"{self.path}: {self.damage}; run 'miner chain verify'")
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
        self.times.append(header.time)
        self.bits.append(header.bits)
        self.tip_hash = block_hash
        return height

    def refresh(self) -> None:
        """Pick up blocks appended by other processes."""
        self._load_index()

    # ------------------------------------------------------------------ verification

    def iter_raw(self) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        yield from self._conn.execute("SELECT height, hash, header, body FROM blocks ORDER BY height")

    def verify(self, now: int | None = None) -> int:
        """Re-validate every stored block from genesis; returns the height verified to.

        Raises `InvalidBlock` naming the first bad block. Blocks are judged against the times and
        bits of the blocks before them as stored, so one damaged block is named, not its children.
        """
        clock = int(_time.time()) if now is None else now
        times: list[int] = []
        bits: list[int] = []
        parent_hash = b""
        genesis = self.params.genesis_header().serialize()
        genesis_body = serialize_body(self.params.genesis_txs())
        expected_height = 0
        for height, stored_hash, raw_header, raw_body in self.iter_raw():
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
                except (ValueError, ChainError, UsageError) as exc:
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


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
