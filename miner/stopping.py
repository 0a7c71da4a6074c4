"""The signals that end a run, and lines that a stop signal never cuts short.

Python runs a signal's handler in the main thread, between two bytecodes or inside a system call
that the signal interrupted (a `write` to a pipe that blocks returns EINTR, and Python runs the
handler right there). A handler that raises KeyboardInterrupt inside a line's write cuts the
line short, and a script reading the output finds an event and the summary on one line.

Blocking the signals in the writing thread (`pthread_sigmask`) does not help: the kernel hands a
process-wide signal to any thread that does not block it (a kernel's worker, a reader thread),
and Python still runs the handler in the main thread at once. So the handler asks here instead:
while the main thread writes a line, `interrupt_after_line` records the stop, and the line's
writer raises KeyboardInterrupt as soon as the line is out.

The lowest layer, beside `errors`: `cli/` installs the handler, `ui/` writes the lines, and a
mining run ignores the stop signals while it shuts down (`ignore_stop_signals`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))

Handler = Callable | int | None


class _MainThreadLine:
    """How deep the main thread is in line writes, and whether a stop arrived meanwhile."""

    def __init__(self) -> None:
        self.depth = 0
        self.stop_pending = False


_line = _MainThreadLine()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def interrupt_after_line() -> bool:
    """For a stop signal's handler: True when the main thread is writing a line, in which case
    the stop is recorded and raised as KeyboardInterrupt once the line is out (the handler
    returns without raising); False when the handler should raise now."""
    if _in_main_thread() and _line.depth > 0:
        _line.stop_pending = True
        return True
    return False


@contextmanager
def whole_line() -> Iterator[None]:
    """Write one line inside this: a stop signal handled meanwhile (by a handler that asks
    `interrupt_after_line`) ends the run right after the line instead of inside it. Other threads
    need nothing: the handler never runs in them."""
    if not _in_main_thread():
        yield
        return
    _line.depth += 1
    try:
        yield
    finally:
        _line.depth -= 1
        if _line.depth == 0 and _line.stop_pending:
            _line.stop_pending = False
            raise KeyboardInterrupt


def ignore_stop_signals() -> dict[int, Handler]:
    """Ignore the stop signals (while a command shuts down) and return the handlers to restore.
    Only the main thread can set handlers: elsewhere the caller's policy stays as it is."""
    if not _in_main_thread():
        return {}
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}


def restore_handlers(previous: dict[int, Handler]) -> None:
    for sig, handler in previous.items():
        if handler is not None:  # None: set outside Python, and cannot be put back from here
            signal.signal(sig, handler)
