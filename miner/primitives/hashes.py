"""Bitcoin's hash, and how hashes are read as numbers and shown.

Hashes are kept in internal byte order and *shown* byte-reversed, so a block hash with leading
zeros prints that way; read as a little-endian 256-bit integer a hash is compared with targets.
"""

from __future__ import annotations

import hashlib

from miner.errors import InvalidHeader


def sha256d(data: bytes) -> bytes:
    """Double SHA-256, Bitcoin's block and transaction hash."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash_to_int(h: bytes) -> int:
    """A 32-byte hash in internal order as the 256-bit number compared with targets."""
    return int.from_bytes(h, "little")


def display_hex(h: bytes) -> str:
    """Hash bytes in internal order shown as Bitcoin shows them (byte-reversed hex)."""
    return h[::-1].hex()


def parse_display_hex(text: str, what: str = "hash") -> bytes:
    """Inverse of `display_hex`, with a clear error for anything not 32 bytes of hex."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidHeader(f"{what} is not valid hex: {text!r}") from None
    if len(raw) != 32:
        raise InvalidHeader(f"{what} must be 32 bytes, got {len(raw)}")
    return raw[::-1]
