"""What a pool's lines mean, apart from the connection that reads them: a reply to one of our
requests and the pool's reason when it said no (in the pool's own words, wherever the pool puts
them), the previous-hash word order of `mining.notify`, and the height a coinbase names."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

LOST = "connection lost before the pool answered"


@dataclass
class Reply:
    """A reply to one of our requests, delivered to whoever waits for it."""

    result: Any = None
    error: Any = None
    done: threading.Event | None = None
    reject_reason: Any = None  # ckpool's own field beside a false result, e.g. "Above target"

    @property
    def refused(self) -> str | None:
        """The pool's reason when it said no, in the pool's words wherever it puts them (the
        error `[code, message, ...]` most pools send, a bare error, ckpool's `reject-reason`
        beside `result: false`, or a string result), else None."""
        if self.error:
            if isinstance(self.error, list) and len(self.error) >= 2:
                return f"{_printable(self.error[1])} ({_printable(self.error[0])})"
            if isinstance(self.error, dict) and "message" in self.error:
                code = self.error.get("code")
                return _printable(self.error["message"]) + (f" ({_printable(code)})" if code is not None else "")
            return _printable(self.error)
        if self.result is not True:
            if self.reject_reason:
                return _printable(self.reject_reason)
            if isinstance(self.result, str) and self.result:
                return _printable(self.result)
            return "refused" if self.result is False else f"unexpected result {_printable(self.result, 80)}"
        return None


def _printable(value: Any, limit: int = 200) -> str:
    """A pool's words as one safe line: control characters and lone surrogates escaped, cut."""
    text = value if isinstance(value, str) else json.dumps(value)
    if not text.isprintable():
        text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text[:limit]


def unswap_prevhash(text: str) -> bytes:
    """mining.notify's previous hash back to header byte order: each 4-byte word reversed."""
    raw = bytes.fromhex(text)
    if len(raw) != 32:
        raise ValueError("prevhash is not 32 bytes")
    return b"".join(raw[i:i + 4][::-1] for i in range(0, 32, 4))


def coinbase_height(coinb1: bytes) -> int:
    """The BIP 34 height at the start of the coinbase's scriptSig, 0 when there is none (for
    reports only: nothing is built on it)."""
    # version (4), input count (1), previous output (36), script length (1 for any short script)
    at = 4 + 1 + 36 + 1
    if len(coinb1) <= at:
        return 0
    op = coinb1[at]
    if 0x51 <= op <= 0x60:
        return op - 0x50
    if 1 <= op <= 8 and len(coinb1) >= at + 1 + op:
        return int.from_bytes(coinb1[at + 1:at + 1 + op], "little")
    return 0
