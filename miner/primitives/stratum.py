"""Stratum v1 as pools and miners speak it: newline-delimited JSON-RPC 1.0 over TCP, its error codes, and
the byte orders its fields are written in.

Stratum has no specification beyond what the first pools did (slush's pool, 2012) and what
miners expect since; the conventions kept here are the ones cpuminer, cgminer and ckpool share:
- difficulty 1 is the target 0xFFFF * 2^208, the one `nBits` 0x1d00ffff stands for (some
  miners once used 2^224 - 1, which differs in the low bits);
- `mining.notify` writes the previous block hash as eight 4-byte words, each word's bytes
  reversed from the header's order (a quirk of the first pool software, kept by all);
- version, nbits and ntime are 8 hex digits of the 32-bit number, most significant first; the
  nonce of `mining.submit` likewise; extranonces and coinbase parts are plain bytes in hex;
- a refused share is `[code, message, null]` with the codes below.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from typing import Any

from miner.primitives.compact import DIFF1_TARGET

_HEX = re.compile(r"[0-9a-fA-F]*")

MAX_TARGET = (1 << 256) - 1
VERSION_MASK = 0x1FFFE000  # BIP 320: the header version bits a miner may roll (BIP 310 negotiates them)

# The error codes pools use (slush's list, kept by ckpool and cgminer).
OTHER = 20
JOB_NOT_FOUND = 21  # stale
DUPLICATE = 22
LOW_DIFFICULTY = 23
UNAUTHORIZED = 24
NOT_SUBSCRIBED = 25


class StratumError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_json(self) -> list:
        return [self.code, self.message, None]


# Scrypt pools count share difficulty 65,536 times easier: their difficulty 1 is the target
# 0xFFFF * 2^224 (pooler's cpuminer divides the pool's difficulty by 65536 for scrypt).
SCRYPT_DIFF1_TARGET = DIFF1_TARGET << 16


def diff1_target(pow: str = "sha256d") -> int:
    """The target of share difficulty 1 under a proof of work, as pools count it."""
    return SCRYPT_DIFF1_TARGET if pow == "scrypt" else DIFF1_TARGET


def difficulty_to_target(difficulty: float, pow: str = "sha256d") -> int:
    """The share target for a Stratum difficulty (any positive number, below 1 too), exactly:
    the float is taken as the rational number it is."""
    if not difficulty > 0:
        raise ValueError("difficulty must be positive")
    return min(MAX_TARGET, int(Fraction(diff1_target(pow)) / Fraction(difficulty)))


def stratum_prevhash(prev_hash: bytes) -> str:
    """The previous block hash (header byte order) as mining.notify writes it."""
    return b"".join(prev_hash[i:i + 4][::-1] for i in range(0, 32, 4)).hex()


def word_hex(value: int) -> str:
    return f"{value & 0xFFFFFFFF:08x}"


def parse_word(text: Any, name: str) -> int:
    """An 8-hex-digit 32-bit field of mining.submit."""
    if not isinstance(text, str) or len(text) != 8 or not _HEX.fullmatch(text):
        raise StratumError(OTHER, f"{name} must be 8 hex digits")
    return int(text, 16)


def parse_hex(text: Any, size: int, name: str) -> bytes:
    if not isinstance(text, str) or len(text) != 2 * size or not _HEX.fullmatch(text):
        raise StratumError(OTHER, f"{name} must be {size} bytes in hex")
    return bytes.fromhex(text)


def positive_number(value: Any) -> float | None:
    """A JSON number above zero as a finite float, else None (a bool is not a number; a
    400-digit integer does not fit a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if 0 < number < float("inf") else None


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def reply(rid: Any, result: Any = None, error: StratumError | None = None) -> bytes:
    return encode({"id": rid, "result": result, "error": error.to_json() if error else None})


def notification(method: str, params: list) -> bytes:
    return encode({"id": None, "method": method, "params": params})


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: JSON, but a float holds it only as infinity, which is not
        raise ValueError(f"{text[:20]} is too large")
    return value


def parse_line(line: bytes) -> tuple[Any, str, list]:
    """(id, method, params) of one request line; raises StratumError for what is not one.
    Python's parser takes NaN and Infinity, which are not JSON, and reads 1e400 as infinity:
    a request with the id NaN was answered with NaN echoed back, a line no JSON parser reads;
    such a line is a parse error, as a strict parser (ckpool's jansson) has it."""
    try:
        message = json.loads(line, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise StratumError(OTHER, "Parse error") from None
    if not isinstance(message, dict):
        raise StratumError(OTHER, "a request must be a JSON object")
    method = message.get("method")
    params = message.get("params", [])
    if not isinstance(method, str):
        raise StratumError(OTHER, "Missing method")
    if params is None:
        params = []
    if not isinstance(params, list):
        raise StratumError(OTHER, "params must be an array")
    return message.get("id"), method, params
