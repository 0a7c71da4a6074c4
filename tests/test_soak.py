"""The soak (`python -m miner.bench.soak`) as the suite runs it: a 60-second run with faults
passes; the same soak with a bug planted in the node exits 1 naming what broke; Ctrl-C stops it
and everything it started.

Bugs are planted from outside the product: a `sitecustomize.py` in a temporary folder put on
PYTHONPATH, which every Python process of the soak (nodes and miners too) imports at start-up,
patches the node's Stratum server when SOAK_PLANT names a bug. No hook for this is in the code
under test. Left behind is judged as `ps` would see it: any process whose working folder is
inside the soak's folder (every node and miner runs there).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PLANTS = '''
"""Bugs planted in the node for tests/test_soak.py, chosen by SOAK_PLANT."""
import asyncio
import os

plant = os.environ.get("SOAK_PLANT")
if plant:
    from miner.chain.outcome import BlockOutcome, BlockResult
    from miner.node.stratum import server

    async def dropped(self, job, share, worker):  # a block answered as taken, never stored
        return BlockOutcome(BlockResult.CONNECTED, job.block(share).hash)

    async def refused(self, job, share, worker):  # every block-meeting share refused
        return BlockOutcome(BlockResult.CONSENSUS, job.block(share).hash, reason="planted refusal")

    async def stalled(self):  # no new work once the first job is out
        await asyncio.Event().wait()

    if plant == "drop":
        server.StratumServer.found_block = dropped
    elif plant == "refuse":
        server.StratumServer.found_block = refused
    elif plant == "stall":
        server.StratumServer._refresh = stalled
'''


def soak(folder: Path, *args: str, env: dict | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "miner.bench.soak", "--dir", str(folder), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          check=False)


def left_in(folder: Path) -> list[str]:
    """Processes still running with their working folder inside `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if cwd.startswith(str(folder.resolve())) and state != "Z":
            found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes().replace(bytes(1), b' ')[:120]!r}")
    return found


def test_a_minute_with_faults_keeps_every_invariant(tmp_path):
    out = soak(tmp_path / "soak", "--minutes", "1", "--faults", "--seed", "7")
    print(out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| violations | 0 |" in out.stdout
    faults = out.stdout.split("| faults injected | ")[1].split("|")
    assert int(faults[0]) >= 4 and all(k in faults[1] for k in ("kill-node", "kill-pool", "partition", "kill-miner"))
    acknowledged = int(out.stdout.split("| blocks acknowledged | ")[1].split(" ")[0])
    assert acknowledged > 0 and f"| stored on the acknowledging node | {acknowledged} / {acknowledged} |" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    assert left_in(tmp_path / "soak") == []


@pytest.mark.parametrize("plant, violation", [
    ("drop", "lost-block"),  # the pool answers a block as taken without storing it
    ("refuse", "refused-block"),  # the pool refuses every block-meeting share
    ("stall", "idle"),  # the pool sends no new work: its miners stand idle
])
def test_a_planted_bug_makes_the_soak_fail_naming_it(tmp_path, plant, violation):
    plants = tmp_path / "plants"
    plants.mkdir()
    (plants / "sitecustomize.py").write_text(PLANTS)
    path = os.pathsep.join([str(plants), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = soak(tmp_path / "soak", "--minutes", "0.25", env={"PYTHONPATH": path, "SOAK_PLANT": plant})
    print(out.stdout, out.stderr)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"soak: violation: {violation}: " in out.stderr
    assert left_in(tmp_path / "soak") == []


def test_ctrl_c_stops_the_soak_and_everything_it_started(tmp_path):
    folder = tmp_path / "soak"
    proc = subprocess.Popen([sys.executable, "-m", "miner.bench.soak", "--minutes", "5", "--dir", str(folder)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if "] up: " in line:
                break
            assert time.monotonic() < deadline
        time.sleep(2)
        assert left_in(folder)  # the network runs
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130
        assert "stopped every process it started (0 left)" in proc.stderr.read()
        assert left_in(folder) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _ScriptedTips:
    """A stand-in cluster whose nodes answer getblockchaininfo from a script of (hash, work)
    pairs, one step per poll round: what `Faults.converge` is judged on, without processes."""

    def __init__(self, script: list[list[tuple[str, str]]]):
        from miner.localnet import Member, Network
        self.script, self.calls = script, 0
        self.net = Network("", "local", "ring", [Member(f"node{i}", "", os.getpid()) for i in range(2)])

    def rpc(self, member, method, *params, timeout=5.0):
        step = self.script[min(self.calls // 2, len(self.script) - 1)]
        self.calls += 1
        block, work = step[int(member.name[-1])]
        return {"bestblockhash": block, "chainwork": work}


@pytest.mark.parametrize("tie, blamed", [(True, False), (False, True)])
def test_a_late_agreement_is_excused_only_when_the_nodes_were_at_a_tie(monkeypatch, tie, blamed):
    """Two tips of equal chainwork stay apart until the next block (each node keeps the one it
    saw first, as Core); tips apart with unequal work past the limit are a convergence failure."""
    import random

    from miner.bench import soak_faults
    from miner.bench.soak_faults import Faults
    from miner.bench.soak_watch import Watch

    monkeypatch.setattr(soak_faults.time, "sleep", lambda s: None)
    apart = [("a", "05"), ("b", "05" if tie else "04")]
    cluster = _ScriptedTips([apart] * 40 + [[("c", "06"), ("c", "06")]])
    watch = Watch(cluster, lambda text, event: None)
    faults = Faults(cluster, watch, random.Random(1), lambda text, event: None)
    took = faults.converge("a test", limit=0.0)
    assert took is not None and faults.late and faults.late[0]["tie"] is tie
    assert bool(watch.violations) is blamed and faults.last_tie is tie
