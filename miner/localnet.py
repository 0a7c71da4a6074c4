"""`miner net`: a network of nodes on 127.0.0.1 in one command, its state, and its end.

`up` creates one chain (so every node shares its genesis), copies it into a folder per node,
starts the nodes one after another, each `--connect`ing to the ones before it (a ring: to the
previous, and the first to the last; a mesh: to all), and starts `miner mine --url` against the
first K nodes. Every process runs in its own session with its output in its folder, so the
network outlives the command; `net.json` in the network's folder lists them. `status` asks
every node for its tip and peers; `down` stops miners first, then nodes (SIGTERM, then SIGKILL
after a grace period) and removes `net.json`, keeping the chains and logs.

Each member records the ports its node listened on and the peers it keeps, so `start_node` can
bring a stopped or killed node back as it was (same ports, same chain, same peers): what a test
of crashes and restarts needs (`python -m miner.bench.soak`), and what its peers' reconnect
loops expect.

A layer of its own, above node/ (it reads the node's cookie path) and below bench/ (the soak
drives it): it runs nodes as separate processes and never imports their internals.
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
    # the node's listening line (port, p2p_port, stratum_port, metrics_port): a restart reuses them
    ports: dict[str, int] = field(default_factory=dict)
    connect: list[int] = field(default_factory=list)  # p2p ports of the peers it keeps connections to
    args: list[str] = field(default_factory=list)  # its other options, e.g. --stratum-port 0


@dataclass
class Network:
    folder: str
    preset: str
    topology: str
    members: list[Member] = field(default_factory=list)
    backend: str = "auto"  # the nodes' (generatetoaddress) and miners' backends

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
                       [Member(**m) for m in data["members"]], data.get("backend", "auto"))
        except FileNotFoundError:
            raise InvalidInput(f"no network in {folder} (no {STATE}); start one with 'miner net up N'") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MinerError(f"{path} is unreadable ({exc}); stop its processes by hand") from None


def alive(pid: int | None) -> bool:
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


def spawn(args: list[str], folder: Path, log: str) -> subprocess.Popen:
    """`python -m miner ARGS` in a session of its own (so that a signal to its group reaches it
    and everything it starts), its output appended to `folder/log`."""
    with open(folder / log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "miner", *args], cwd=folder, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def listening(folder: Path, proc: subprocess.Popen, offset: int = 0) -> dict:
    """The node's first event line (JSON) written past `offset` of its log (where the log ended
    when it was started: an earlier run's line is not this one's), once it is written."""
    deadline = time.monotonic() + START_TIMEOUT
    log = folder / "node.log"

    def text() -> str:
        if not log.exists():
            return ""
        with open(log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = text().strip().splitlines()[-1:]
            raise MinerError(f"node in {folder} exited {proc.returncode}: {' '.join(tail)}")
        for line in text().splitlines():
            if line.startswith("{") and '"listening"' in line:
                return json.loads(line)
        time.sleep(0.05)
    raise MinerError(f"node in {folder} did not start within {START_TIMEOUT:.0f} s")


class RpcRefused(MinerError):
    """A node's JSON-RPC error answer, with Core's code (-5 block not found, -29 not connected...)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def rpc(member: Member, method: str, *params, timeout: float = 5.0):
    """One call to a member's node with its cookie; a refusal raises RpcRefused. JSON-RPC 2.0,
    so that an error comes back as a 200 reply with its code (1.0 errors come with Core's HTTP
    statuses, which urllib raises before the body is read)."""
    cookie = cookie_path(Path(member.folder) / CHAIN_NAME)
    auth = base64.b64encode(cookie.read_bytes()).decode()
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    req = urllib.request.Request(member.rpc_url, json.dumps(body).encode(),
                                 headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if reply.get("error"):
        raise RpcRefused(f"{member.name}: {method}: {reply['error'].get('message')}", reply["error"].get("code", 0))
    return reply["result"]


def up(folder: Path, count: int, miners: int, topology: str = "ring", preset_name: str = "local",
       threads: int = 1, backend: str = "auto", node_args: dict[int, list[str]] | None = None) -> Network:
    """Start the network; `node_args` gives node i options of its own (its port options, such as
    `--stratum-port 0`, keep the port first chosen across `start_node`)."""
    if count < 1 or not 0 <= miners <= count:
        raise InvalidInput("give at least one node and at most as many miners as nodes")
    if topology not in ("ring", "mesh"):
        raise InvalidInput(f"unknown topology {topology!r} (choose ring or mesh)")
    if (folder / STATE).exists():
        net = Network.load(folder)
        if any(alive(m.pid) for m in net.members):
            raise InvalidInput(f"a network is already running in {folder}; 'miner net down' first")
    folder.mkdir(parents=True, exist_ok=True)
    seed = folder / "genesis.sqlite"
    if not seed.exists():
        Chain.create(seed, with_genesis_time(preset(preset_name, int(time.time())), int(time.time()))).close()
    net = Network(str(folder.resolve()), preset_name, topology, backend=backend)
    try:
        for i in range(count):
            home = folder / f"node{i}"
            home.mkdir(exist_ok=True)
            chain = home / CHAIN_NAME
            if not chain.exists():
                shutil.copy(seed, chain)
            before = [m for m in net.members] if topology == "mesh" else net.members[-1:]
            member = Member(f"node{i}", str(home.resolve()), 0, connect=[m.p2p_port for m in before],
                            args=list((node_args or {}).get(i, [])))
            net.members.append(member)
            start_node(net, member)
        if topology == "ring" and count > 2:
            rpc(net.members[0], "addnode", f"127.0.0.1:{net.members[-1].p2p_port}", "add")
            net.members[0].connect.append(net.members[-1].p2p_port)
            net.save()
        for member in net.members[:miners]:
            home = Path(member.folder)
            proc = spawn(["mine", "--url", member.rpc_url, "--rpc-cookie-file", str(cookie_path(home / CHAIN_NAME)),
                           "--blocks", "1000000", "--threads", str(threads), "--backend", backend, "--json"],
                          home, "miner.log")
            member.miner_pid = proc.pid
            net.save()
    except BaseException:
        down(folder)
        raise
    return net


# The options naming a port, and the key of the listening line that says which port it became.
PORT_OPTIONS = {"--rpc-port": "port", "--listen": "p2p_port", "--stratum-port": "stratum_port",
                "--metrics-port": "metrics_port"}


def node_command(member: Member, backend: str) -> list[str]:
    """The member's `miner node` arguments: every port it had before (0 the first time), its
    peers, its own options."""
    own = list(member.args)
    for i, arg in enumerate(own[:-1]):
        if arg in PORT_OPTIONS and member.ports.get(PORT_OPTIONS[arg]):
            own[i + 1] = str(member.ports[PORT_OPTIONS[arg]])
    connect = [a for port in member.connect for a in ("--connect", f"127.0.0.1:{port}")]
    return ["node", "--chain", CHAIN_NAME, "--rpc-port", str(member.ports.get("port", 0)),
            "--listen", str(member.ports.get("p2p_port", 0)), "--json", "--backend", backend, *connect, *own]


def start_node(net: Network, member: Member) -> None:
    """Start (or start again, after a stop or a crash) a member's node on its own chain, its
    ports, its peers, and wait until it listens."""
    home = Path(member.folder)
    log = home / "node.log"
    offset = log.stat().st_size if log.exists() else 0
    proc = spawn(node_command(member, net.backend), home, "node.log")
    member.pid = proc.pid
    net.save()
    ready = listening(home, proc, offset)
    member.ports = {k: v for k, v in ready.items() if k in PORT_OPTIONS.values() and isinstance(v, int)}
    member.rpc_url, member.p2p_port = ready["url"], ready["p2p_port"]
    net.save()


def status(folder: Path) -> dict:
    """Each node's state as its RPC tells it, and whether all agree on the tip."""
    net = Network.load(folder)
    rows = []
    for m in net.members:
        row = {"name": m.name, "pid": m.pid, "alive": alive(m.pid), "mining": alive(m.miner_pid),
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
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while any(alive(p) for p in group) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in group:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(str(pid))
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    (folder / STATE).unlink(missing_ok=True)
    return killed
