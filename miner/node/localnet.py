"""`miner net`: a network of nodes on 127.0.0.1 in one command, its state, and its end.

`up` creates one chain (so every node shares its genesis), copies it into a folder per node,
starts the nodes one after another, each `--connect`ing to the ones before it (a ring: to the
previous, and the first to the last; a mesh: to all), and starts `miner mine --url` against the
first K nodes. Every process runs in its own session with its output in its folder, so the
network outlives the command; `net.json` in the network's folder lists them. `status` asks
every node for its tip and peers; `down` stops miners first, then nodes (SIGTERM, then SIGKILL
after a grace period) and removes `net.json`, keeping the chains and logs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from miner.chain.chain import Chain
from miner.consensus.params import preset, with_genesis_time
from miner.errors import InvalidInput, MinerError
from miner.node.rpc.auth import cookie_path

STATE = "net.json"
CHAIN_NAME = "chain.sqlite"  # each node's, in its own folder
START_TIMEOUT = 60.0
STOP_GRACE = 20.0


@dataclass
class Member:
    name: str
    folder: str
    pid: int
    rpc_url: str = ""
    p2p_port: int = 0
    miner_pid: int | None = None


@dataclass
class Network:
    folder: str
    preset: str
    topology: str
    members: list[Member] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.folder) / STATE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, folder: Path) -> Network:
        path = folder / STATE
        try:
            data = json.loads(path.read_text())
            return cls(data["folder"], data["preset"], data["topology"],
                       [Member(**m) for m in data["members"]])
        except FileNotFoundError:
            raise InvalidInput(f"no network in {folder} (no {STATE}); start one with 'miner net up N'") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MinerError(f"{path} is unreadable ({exc}); stop its processes by hand") from None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours is not alive
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _spawn(args: list[str], folder: Path, log: str) -> subprocess.Popen:
    with open(folder / log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "miner", *args], cwd=folder, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _listening(folder: Path, proc: subprocess.Popen) -> dict:
    """The node's first event line (JSON), once it is written."""
    deadline = time.monotonic() + START_TIMEOUT
    log = folder / "node.log"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise MinerError(f"node in {folder} exited {proc.returncode}: {' '.join(tail)}")
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            if line.startswith("{") and '"listening"' in line:
                return json.loads(line)
        time.sleep(0.05)
    raise MinerError(f"node in {folder} did not start within {START_TIMEOUT:.0f} s")


def rpc(member: Member, method: str, *params, timeout: float = 5.0):
    cookie = cookie_path(Path(member.folder) / CHAIN_NAME)
    auth = base64.b64encode(cookie.read_bytes()).decode()
    req = urllib.request.Request(member.rpc_url, json.dumps({"method": method, "params": list(params)}).encode(),
                                 headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if reply.get("error"):
        raise MinerError(f"{member.name}: {method}: {reply['error'].get('message')}")
    return reply["result"]


def up(folder: Path, count: int, miners: int, topology: str = "ring", preset_name: str = "local",
       threads: int = 1, backend: str = "auto") -> Network:
    if count < 1 or not 0 <= miners <= count:
        raise InvalidInput("give at least one node and at most as many miners as nodes")
    if topology not in ("ring", "mesh"):
        raise InvalidInput(f"unknown topology {topology!r} (choose ring or mesh)")
    if (folder / STATE).exists():
        net = Network.load(folder)
        if any(_alive(m.pid) for m in net.members):
            raise InvalidInput(f"a network is already running in {folder}; 'miner net down' first")
    folder.mkdir(parents=True, exist_ok=True)
    seed = folder / "genesis.sqlite"
    if not seed.exists():
        Chain.create(seed, with_genesis_time(preset(preset_name, int(time.time())), int(time.time()))).close()
    net = Network(str(folder.resolve()), preset_name, topology)
    try:
        for i in range(count):
            home = folder / f"node{i}"
            home.mkdir(exist_ok=True)
            chain = home / CHAIN_NAME
            if not chain.exists():
                shutil.copy(seed, chain)
            before = [m for m in net.members] if topology == "mesh" else net.members[-1:]
            connect = [a for m in before for a in ("--connect", f"127.0.0.1:{m.p2p_port}")]
            proc = _spawn(["node", "--chain", CHAIN_NAME, "--rpc-port", "0", "--listen", "0", "--json",
                           "--backend", backend, *connect], home, "node.log")
            member = Member(f"node{i}", str(home.resolve()), proc.pid)
            net.members.append(member)
            net.save()
            ready = _listening(home, proc)
            member.rpc_url, member.p2p_port = ready["url"], ready["p2p_port"]
            net.save()
        if topology == "ring" and count > 2:
            rpc(net.members[0], "addnode", f"127.0.0.1:{net.members[-1].p2p_port}", "add")
        for member in net.members[:miners]:
            home = Path(member.folder)
            proc = _spawn(["mine", "--url", member.rpc_url, "--rpc-cookie-file", str(cookie_path(home / CHAIN_NAME)),
                           "--blocks", "1000000", "--threads", str(threads), "--backend", backend, "--json"],
                          home, "miner.log")
            member.miner_pid = proc.pid
            net.save()
    except BaseException:
        down(folder)
        raise
    return net


def status(folder: Path) -> dict:
    """Each node's state as its RPC tells it, and whether all agree on the tip."""
    net = Network.load(folder)
    rows = []
    for m in net.members:
        row = {"name": m.name, "pid": m.pid, "alive": _alive(m.pid), "mining": _alive(m.miner_pid),
               "p2p_port": m.p2p_port, "height": None, "tip": None, "peers": None, "error": None}
        if row["alive"]:
            try:
                info = rpc(m, "getblockchaininfo")
                row.update(height=info["blocks"], tip=info["bestblockhash"], peers=rpc(m, "getconnectioncount"))
            except (OSError, MinerError, urllib.error.URLError, ValueError) as exc:
                row["error"] = str(exc)[:80]
        rows.append(row)
    tips = {r["tip"] for r in rows}
    return {"folder": net.folder, "preset": net.preset, "topology": net.topology, "nodes": rows,
            "agree": len(tips) == 1 and None not in tips}


def down(folder: Path) -> list[str]:
    """Stop every process of the network; the names of those that needed SIGKILL."""
    net = Network.load(folder)
    pids = [m.miner_pid for m in net.members if m.miner_pid] + [m.pid for m in net.members]
    killed = []
    for group in ([m.miner_pid for m in net.members if m.miner_pid], [m.pid for m in net.members]):
        for pid in group:
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while any(_alive(p) for p in group) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in group:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(str(pid))
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    (folder / STATE).unlink(missing_ok=True)
    return killed
