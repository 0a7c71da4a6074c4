"""`miner header`: decode one 80-byte header and judge its proof of work as Bitcoin Core would.

The header comes as hex on the command line, from a file (hex text or the 80 raw bytes), or from
standard input (`-`). Proof of work is judged by `check_proof_of_work` against Bitcoin mainnet's
limit unless `--preset` or `--pow-limit` names another, so a regtest header is "valid" only where
regtest's limit applies, exactly as a node of that network would say.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import time
from pathlib import Path

from miner.consensus.pow import algorithm, proof_of_work_error
from miner.errors import InvalidHeader, MinerError, UsageError
from miner.primitives.compact import (
    MAINNET_POW_LIMIT,
    bits_to_target,
    decode_compact,
    difficulty,
    parse_bits,
)
from miner.primitives.hashes import display_hex
from miner.primitives.header import HEADER_SIZE, BlockHeader

MAX_INPUT = 1 << 16  # bytes read from a file or stdin: far more than any header, never a flood
_HEX = set("0123456789abcdefABCDEF")


def read_header(arg: str) -> BlockHeader:
    """The header named by `arg`: hex digits, `-` for standard input, or a file's path."""
    if arg == "-":
        return _decode(sys.stdin.buffer.read(MAX_INPUT + 1), "standard input")
    cleaned = "".join(arg.split())
    if cleaned and set(cleaned) <= _HEX:
        return BlockHeader.from_hex(cleaned)
    path = Path(arg)
    try:
        with path.open("rb") as f:
            return _decode(f.read(MAX_INPUT + 1), str(path))
    except (FileNotFoundError, IsADirectoryError):
        pass
    except OSError as exc:  # unreadable, or a name too long to be a file at all
        if exc.errno != errno.ENAMETOOLONG:
            raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    raise InvalidHeader("header is neither hex digits nor a readable file (use - for standard input)")


def _decode(data: bytes, where: str) -> BlockHeader:
    if len(data) > MAX_INPUT:
        raise InvalidHeader(f"{where}: more than {MAX_INPUT} bytes; a header is {HEADER_SIZE}")
    if len(data) == HEADER_SIZE:
        return BlockHeader.deserialize(data)  # raw bytes, as `xxd -r -p` or a block file gives
    try:
        return BlockHeader.from_hex(data.decode("ascii"))
    except (UnicodeDecodeError, InvalidHeader) as exc:
        detail = "not hex" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise InvalidHeader(f"{where}: not a header in hex or raw bytes ({detail})") from None


def parse_pow_limit(text: str) -> int:
    """`--pow-limit`: compact bits (`1d00ffff`, `207fffff`) or a 64-digit hex target."""
    t = text.strip().lower().removeprefix("0x")
    if len(t) == 64 and set(t) <= _HEX:
        value = int(t, 16)
        if value == 0:
            raise UsageError("--pow-limit must not be zero")
        return value
    try:
        return bits_to_target(parse_bits(t))
    except MinerError as exc:
        raise UsageError(f"--pow-limit wants compact bits or a 64-digit target: {exc}") from None


def header_report(header: BlockHeader, pow_limit: int = MAINNET_POW_LIMIT, pow: str = "sha256d") -> dict:
    value, negative, overflow = decode_compact(header.bits)
    decodable = value != 0 and not (negative or overflow)  # a target to show, valid or not
    block_hash = header.hash()
    report = {
        "hash": display_hex(block_hash),
        "version": header.version,
        "prev_hash": display_hex(header.prev_hash),
        "merkle_root": display_hex(header.merkle_root),
        "time": header.time,
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(header.time)),
        "bits": f"{header.bits:08x}",
        "nonce": header.nonce,
        "target": f"{value:064x}" if decodable else None,
        "difficulty": difficulty(value) if decodable else None,
        "pow_limit": f"{pow_limit:064x}",
    }
    algo = algorithm(pow)
    pow_hash = algo.pow_hash(header, block_hash)
    report["pow"] = pow
    if not algo.is_block_id:
        report["pow_hash"] = display_hex(pow_hash)
    error = proof_of_work_error(pow_hash, header.bits, pow_limit)
    report["meets_target"] = error is None
    if error:
        report["pow_error"] = error
    return report


def cmd_header(args: argparse.Namespace) -> int:
    pow = args.pow or "sha256d"
    if args.preset:
        from miner.consensus.params import preset
        chain = preset(args.preset, 0)
        limit, pow = chain.pow_limit, args.pow or chain.pow
    elif args.pow_limit:
        limit = parse_pow_limit(args.pow_limit)
    else:
        limit = MAINNET_POW_LIMIT
    report = header_report(read_header(args.hex), limit, pow)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
    return 0 if report["meets_target"] else 1  # scripts can test it: 1, the proof of work fails
