"""Bitcoin's CompactSize and a strict reader over bytes.

Every count the reader takes is bounded by the bytes actually left, so a hostile CompactSize
fails before anything is allocated, and every read past the end is a `DecodeError`.
"""

from __future__ import annotations

import struct


class DecodeError(ValueError):
    """Bytes that are not a Bitcoin transaction or block."""


def varint(n: int) -> bytes:
    """Bitcoin's CompactSize encoding."""
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


_VARINT_SIZES = {0xFD: 2, 0xFE: 4, 0xFF: 8}


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a CompactSize at `pos`; returns (value, new position). Raises ValueError if short."""
    if pos >= len(data):
        raise ValueError("truncated varint")
    first = data[pos]
    if first < 0xFD:
        return first, pos + 1
    size = _VARINT_SIZES[first]
    if pos + 1 + size > len(data):
        raise ValueError("truncated varint")
    return int.from_bytes(data[pos + 1:pos + 1 + size], "little"), pos + 1 + size


class Reader:
    """A cursor over bytes whose every read fails cleanly (DecodeError) past the end."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError("unexpected end of data")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def i64(self) -> int:
        return struct.unpack("<q", self.take(8))[0]

    def count(self, min_item_size: int) -> int:
        """A CompactSize that counts items of at least `min_item_size` bytes: more items than the
        remaining bytes could hold is an error here, before anything is allocated."""
        start = self.pos
        try:
            n, self.pos = read_varint(self.data, self.pos)
        except (ValueError, KeyError):
            raise DecodeError("unexpected end of data") from None
        if self.pos - start != len(varint(n)):
            raise DecodeError(f"non-canonical CompactSize for {n}")  # Core's ReadCompactSize refuses it
        if n * max(1, min_item_size) > len(self.data) - self.pos:
            raise DecodeError(f"count {n} is larger than the data left")
        return n

    def var_bytes(self) -> bytes:
        return self.take(self.count(1))

    def done(self, what: str) -> None:
        """Trailing bytes are an error."""
        if self.pos != len(self.data):
            raise DecodeError(f"{len(self.data) - self.pos} bytes after {what}")
