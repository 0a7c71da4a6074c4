"""How the `miner` process answers Ctrl-C, SIGTERM and SIGHUP: the first one ends the command the
way Ctrl-C does (a KeyboardInterrupt in the main thread, so the command can print its summary and
close what it holds); every later one is ignored.

Why a later one is ignored for the rest of the process and not only while shutting down: once a
command has finished its summary it hands the signals back and returns, and a second Ctrl-C
landing between that and the interpreter's exit would otherwise raise where nothing catches it,
killing the process by SIGINT and printing a traceback from the thread shutdown. A user who must
stop a hung shutdown still has SIGKILL.
"""

from __future__ import annotations

import signal
import threading

from miner.stopping import STOP_SIGNALS, interrupt_after_line


class InterruptOnce:
    """A signal handler that raises KeyboardInterrupt the first time it is called, and then
    never again. Called while the main thread writes a line, it lets the line finish first
    (`miner.stopping`)."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.seen:
            return
        self.seen = True
        if interrupt_after_line():
            return
        raise KeyboardInterrupt


def _in_main_thread() -> bool:
    # signal.signal works only there; a command run from another thread keeps the caller's policy.
    return threading.current_thread() is threading.main_thread()


def install_process_policy() -> InterruptOnce:
    """For the `miner` executable only: tests and other callers of `cli.main` keep their own
    handlers."""
    handler = InterruptOnce()
    if _in_main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)
    return handler
