"""`miner` as a real process for the tests, and the check every usage or input error must pass:
the exit status, one line `miner: error: ...` naming the problem, never a traceback."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "miner", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("miner: error:") and fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
