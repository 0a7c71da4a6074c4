"""The node's own output: event lines on standard output, log lines on standard error.

A node runs for days under whatever collects its output. Two things must never follow from
that output: the node stalling because nobody reads a pipe (a full pipe blocks the writer, and
a blocked event loop answers nobody, not even SIGTERM), and a client filling the disk or the
terminal (one malformed request, one traceback of 40 lines; a flood of them, megabytes a
second). So:

- Lines go through a bounded queue to a writer thread that calls `os.write` on the descriptor;
  the event loop only enqueues. When the queue is full the line is dropped and counted, and the
  count is reported once the reader catches up. A reader that went away (EPIPE) ends the
  writing, not the node.
- Log records become one line each, without traceback; one of a kind seen again within
  `LOG_REPEAT_WINDOW` seconds is counted instead of printed, and all kinds together get a burst
  of lines and then one a second: a flood costs a line a second at most.
- What a client sent (a worker name, a method, a user agent) reaches a line, a metrics label or
  a reply only through `printable` or `unambiguous`: a lone surrogate (valid JSON, `"x\\udc80"`,
  but no UTF-8 can hold it) once made every scrape answer 500, and a control character would
  reach the terminal reading the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from typing import Any

QUEUE_LINES = 1000
# C0 and C1 control characters and DEL, written as \xNN: a line stays one line, and nothing a
# client sent moves a terminal's cursor or colours.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    r"""`text` as it may be written anywhere: control characters as \xNN, and code points UTF-8
    cannot encode (lone surrogates) as \uNNNN."""
    text = text.translate(_CONTROLS)
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def unambiguous(text: str) -> str:
    """`printable`, with backslashes doubled first, so two different strings never print alike:
    for a label or a name that identifies (two workers must not become one series)."""
    return printable(text.replace("\\", "\\\\"))

LOG_REPEAT_WINDOW = 10.0  # s
LOG_BURST = 20  # lines at once; then one a second


class LineWriter:
    """Lines to one file descriptor without ever blocking the caller."""

    def __init__(self, fd: int):
        self._fd = fd
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_LINES)
        self._dropped = 0
        self._gone = False
        self._thread = threading.Thread(target=self._run, name=f"output-{fd}", daemon=True)
        self._thread.start()

    def line(self, text: str) -> None:
        if self._gone:
            return
        try:
            if self._dropped:
                self._queue.put_nowait(f"({self._dropped} lines dropped: output not read)\n".encode())
                self._dropped = 0
            self._queue.put_nowait(printable(text).encode("utf-8") + b"\n")
        except queue.Full:
            self._dropped += 1

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                while data:
                    data = data[os.write(self._fd, data):]
            except OSError:  # the reader left (EPIPE) or the descriptor is gone: stop writing
                self._gone = True
                return

    def close(self, timeout: float = 2.0) -> None:
        """Let what is queued out, for at most `timeout` seconds (a reader may never come back)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


class _OneLine(logging.Handler):
    """One line per record. A record like one printed within the window (same logger, same
    message template, same exception type: a client varying its garbage makes no new kind) is
    counted instead, and beyond a burst of LOG_BURST lines at most one a second gets out."""

    def __init__(self, writer: LineWriter):
        super().__init__(logging.INFO)
        self._writer = writer
        self._last: dict[tuple, tuple[float, int]] = {}
        self._tokens = float(LOG_BURST)
        self._refilled = time.monotonic()
        self._suppressed = 0

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        key = (record.name, str(record.msg), type(exc).__name__ if exc is not None else None)
        now = time.monotonic()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < LOG_REPEAT_WINDOW:
            self._last[key] = (seen[0], seen[1] + 1)
            return
        self._tokens = min(float(LOG_BURST), self._tokens + (now - self._refilled))
        self._refilled = now
        if self._tokens < 1:
            self._suppressed += 1
            return
        self._tokens -= 1
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = (now, 0)
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # a record whose arguments do not format is still one line
            message = str(record.msg)
        if exc is not None:
            message = f"{message}: {type(exc).__name__}: {exc}" if str(exc) else f"{message}: {type(exc).__name__}"
        message = " ".join(message.split())[:300]
        repeats = seen[1] if seen is not None else 0
        suffix = f" (and {repeats} more like it)" if repeats else ""
        if self._suppressed:
            suffix += f" ({self._suppressed} other log lines suppressed)"
            self._suppressed = 0
        self._writer.line(f"miner node: {record.levelname.lower()}: {message}{suffix}")


def install_logging(writer: LineWriter) -> None:
    """Route every library's log records (aiohttp's 'Error handling request', asyncio's accept
    errors) through the one-line handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_OneLine(writer))
    root.setLevel(logging.WARNING)


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's own errors (a failed accept when descriptors run out, a callback that raised)
    as one log line each, not a traceback each."""
    exc = context.get("exception")
    logging.getLogger("miner.node").error(context.get("message", "event loop error"), exc_info=exc)
