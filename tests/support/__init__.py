"""What the tests share: processes they drive (`nodeproc`, `cliproc`, `bitcoind`, `p2p_node`), peers and
pools they script (`p2p_peer`, `scripted_pool`), blocks they make (`blockmaker`), known values
(`vectors`), the CuPy simulator (`cupy_sim`), and the pytest plugins that give tests their floors
and run the kernel builds beside the suite.

Importable as `support` because pytest puts tests/ on the path (`pythonpath` in pyproject.toml);
nothing here is a test, and no test module imports another. A helper that runs as a program of its
own (`sim_miner`, `reorg_worker`, `pool_interop`) is started with `program()`, from tests/."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent


def program(module: str, *args: str) -> list[str]:
    """The command line that runs `support.<module>` as a program: run it with cwd=TESTS, where
    `python -m` finds the package."""
    return [sys.executable, "-m", f"support.{module}", *args]
