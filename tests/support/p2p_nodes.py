"""`miner node` processes on Core's regtest chain (`regtest-core`) for the peer-to-peer tests: each
one's own chain file shares genesis without copying; `nodes()` stops every one it was handed."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from .nodeproc import NodeProcess

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def node(tmp: Path, name: str, *extra: str) -> NodeProcess:
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    return NodeProcess(folder / "chain.sqlite", "--preset", "regtest-core", "--listen", "0", *extra)


def target(n: NodeProcess) -> str:
    return f"127.0.0.1:{n.ready['p2p_port']}"


def wait_for(check, within: float = 30.0, what: str = "condition"):
    end = time.monotonic() + within
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {within} s")


def tip(n: NodeProcess) -> tuple[int, str]:
    info = n.call("getblockchaininfo")
    return info["blocks"], info["bestblockhash"]


@contextlib.contextmanager
def nodes(*started):
    try:
        yield started
    finally:
        for n in started:
            n.stop()
