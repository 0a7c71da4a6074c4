"""`miner net up|status|down` as a user runs them: five real node processes on 127.0.0.1 wired in
a ring, two of them mined by `miner mine --url`, converging on one tip; every process stopped by
`down` (and by the test, whatever happens)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miner import localnet
from miner.localnet import Network, alive, rpc

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"

ROOT = Path(__file__).resolve().parent.parent


def net(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "miner", "net", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _kill_all(folder: Path) -> None:
    try:
        members = Network.load(folder).members
    except Exception:
        return
    for m in members:
        for pid in (m.miner_pid, m.pid):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_five_nodes_two_mining_agree_on_one_tip(tmp_path):
    folder = tmp_path / "net"
    try:
        up = net("up", "5", "--miners", "2", "--preset", "regtest-core", "--backend", "ref", "--dir", str(folder))
        assert up.returncode == 0, up.stderr
        members = Network.load(folder).members
        assert [bool(m.miner_pid) for m in members] == [True, True, False, False, False]

        def state() -> dict:
            out = net("status", "--json", "--dir", str(folder))
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)
        deadline = time.monotonic() + 60
        while min((n["height"] or 0) for n in state()["nodes"]) < 20:
            assert time.monotonic() < deadline, state()
            time.sleep(0.5)
        for m in members:  # the miners stop; the network settles on the most-work tip
            if m.miner_pid:
                os.kill(m.miner_pid, signal.SIGTERM)
        # Two miners at once leave tips of equal work now and then; each node keeps the one it saw
        # first, as Bitcoin's do, until a next block breaks the tie. So one more block, mined on a
        # node with no miner, then every node must hold the same tip.
        settled = time.monotonic() + 10
        while not state()["agree"] and time.monotonic() < settled:
            time.sleep(0.5)
        last = rpc(members[4], "generatetoaddress", 1, ADDRESS)[0]
        deadline = time.monotonic() + 60
        while not (s := state())["agree"]:
            assert time.monotonic() < deadline, s
            time.sleep(0.5)
        assert {n["tip"] for n in s["nodes"]} == {last}
        assert all(n["alive"] and n["peers"] == 2 for n in s["nodes"])  # a ring: two peers each
        assert len({n["height"] for n in s["nodes"]}) == 1
        table = net("status", "--dir", str(folder))
        assert "all nodes agree on the tip" in table.stdout and table.stdout.count("node") >= 5
        down = net("down", "--dir", str(folder))
        assert down.returncode == 0 and "stopped" in down.stdout
        assert not any(alive(m.pid) or alive(m.miner_pid) for m in members)
        assert not (folder / "net.json").exists() and (folder / "node4" / "chain.sqlite").exists()
    finally:
        _kill_all(folder)


def test_net_usage_errors_are_one_line_and_exit_2(tmp_path):
    out = net("status", "--dir", str(tmp_path / "none"))
    assert out.returncode == 2 and out.stderr.startswith("miner: error: no network in")
    assert "Traceback" not in out.stderr
    out = net("up", "2", "--miners", "3", "--dir", str(tmp_path / "x"))
    assert out.returncode == 2 and "at most as many miners as nodes" in out.stderr
    out = net("down", "--dir", str(tmp_path / "none"))
    assert out.returncode == 2


def test_a_killed_node_starts_again_on_its_ports_and_peers(tmp_path):
    """`localnet.start_node` brings a SIGKILLed node back as it was (the soak's restarts): the
    same RPC, peer and Stratum ports, the same chain, and its ring peers connected again."""
    folder = tmp_path / "net"
    try:
        net_ = localnet.up(folder, 3, 0, preset_name="regtest-core", backend="ref",
                           node_args={1: ["--stratum-port", "0"]})
        victim = net_.members[1]
        mined = rpc(victim, "generatetoaddress", 2, ADDRESS)
        before, pid = dict(victim.ports), victim.pid
        assert before["stratum_port"] and before["p2p_port"] and net_.members[0].connect
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        localnet.start_node(net_, victim)
        assert victim.pid != pid and victim.ports == before
        assert Network.load(folder).members[1].ports == before
        assert rpc(victim, "getbestblockhash") == mined[-1]  # the same chain file
        deadline = time.monotonic() + 20
        while rpc(victim, "getconnectioncount") < 2:  # its own --connect, and its neighbour's retry
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with pytest.raises(localnet.RpcRefused) as refused:  # an error answer keeps its code
            rpc(victim, "getblockheader", "00" * 32)
        assert refused.value.code == -5 and "Block not found" in str(refused.value)
    finally:
        _kill_all(folder)
