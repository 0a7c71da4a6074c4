"""The soak's processes: a `miner net` ring of nodes (`miner.localnet`), Stratum on the first,
our pool clients and any real miners at it, one `miner mine --url http://` at another node, and
the calls to `generatetoaddress`; started, killed, started again, and stopped.

Every process runs in a session of its own, so its process group is its id: a SIGKILL of the
group takes whatever it started, and the end of the soak can prove that no process of any group
it ever started is left (`leftovers`), whatever stopped the soak (the end, Ctrl-C, an exception).
Hashing is kept light on purpose (hashlib, one thread each): the soak is about what holds under
faults, not speed, and shares its two cores with whatever else runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from miner import localnet
from miner.chain.chain import Chain
from miner.consensus.params import preset
from miner.localnet import Member, alive
from miner.node.rpc.auth import cookie_path
from miner.primitives.compact import target_to_bits

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"  # any valid address: the chain keeps no coins
# The `local` preset's rules (ASERT, 3 s spacing, 12 s halflife) starting at about 2^21 hashes a
# block instead of 2^26: hashlib miners sharing two cores find blocks within the first seconds
# rather than after minutes, and ASERT then moves the difficulty block by block as it would.
START_BITS = target_to_bits(1 << 235)
# Nonces a generatetoaddress call may spend: what the next block takes on average, so a call lasts
# about as long as the network takes for a block (its template is not renewed when the tip moves,
# and a block found after that is a side branch, which the call does not count), never more than this.
GENERATE_TRIES = 5_000_000
STOP_GRACE = 15.0


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a process that must keep it across restarts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Miner:
    """One mining process: `pool` (our client at the pool), `http` (our client at a node) or
    `peer` (a real miner program at the pool); `node` is the node that acknowledges its blocks."""

    name: str
    kind: str
    node: str
    argv: list[str]
    folder: Path
    worker: str = ""
    metrics_port: int = 0
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    folder: Path
    nodes: int = 3
    pool_miners: int = 3
    net: localnet.Network | None = None
    miners: list[Miner] = field(default_factory=list)
    groups: set[int] = field(default_factory=set)  # every process group started, for the final sweep
    down: set[str] = field(default_factory=set)  # nodes and miners stopped on purpose, for now

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        now = int(time.time())
        Chain.create(self.folder / "genesis.sqlite",
                     replace(preset("local", now), genesis_bits=START_BITS)).close()
        # node0 serves the pool: vardiff decides every 20 s instead of 240, so share difficulty
        # moves during a short soak too (always capped at the network's).
        pool_args = ["--stratum-port", "0", "--stratum-difficulty", "0.0001",
                     "--stratum-retarget-seconds", "20"]
        own = {i: ["--threads", "1", *(pool_args if i == 0 else [])] for i in range(self.nodes)}
        try:
            self.net = localnet.up(self.folder, self.nodes, 0, "ring", "local", 1, "ref", node_args=own)
        finally:  # a failed start still leaves its nodes to the sweep
            if (self.folder / localnet.STATE).exists():
                self.groups.update(m.pid for m in localnet.Network.load(self.folder).members if m.pid)
        self.groups.update(m.pid for m in self.net.members)
        stratum = self.pool.ports["stratum_port"]
        for i in range(self.pool_miners):
            worker = f"soak.rig{i}"
            port = free_port()
            self.miners.append(Miner(
                f"pool{i}", "pool", self.pool.name,
                ["mine", "--url", f"stratum+tcp://{worker}:x@127.0.0.1:{stratum}", "--backend", "ref",
                 "--json", "--metrics-port", str(port)], self.folder, worker, port))
        http = self.net.members[1 % self.nodes]
        port = free_port()
        self.miners.append(Miner(
            "http", "http", http.name,
            ["mine", "--url", http.rpc_url, "--rpc-cookie-file", str(cookie_path(Path(http.folder) / "chain.sqlite")),
             "--blocks", "1000000", "--backend", "ref", "--json", "--metrics-port", str(port)],
            self.folder, "", port))
        for env, name in (("CPUMINER", "cpuminer"), ("CPUMINER_OPT", "cpuminer-opt")):
            program = os.environ.get(env)
            if program and Path(program).is_file():
                worker = f"soak.{name}"
                self.miners.append(Miner(
                    name, "peer", self.pool.name,
                    [program, "-a", "sha256d", "-t", "1", "-R", "1", "-o", f"stratum+tcp://127.0.0.1:{stratum}",
                     "-O", f"{worker}:x"], self.folder, worker))
        for miner in self.miners:
            self.start_miner(miner)

    @property
    def pool(self) -> Member:
        assert self.net is not None
        return self.net.members[0]

    def member(self, name: str) -> Member:
        assert self.net is not None
        return next(m for m in self.net.members if m.name == name)

    def start_miner(self, miner: Miner) -> None:
        argv = miner.argv if miner.kind == "peer" else [sys.executable, "-m", "miner", *miner.argv]
        with open(miner.log, "ab") as out:
            miner.proc = subprocess.Popen(argv, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        self.groups.add(miner.proc.pid)
        miner.starts += 1

    # ------------------------------------------------------------------ faults

    def kill(self, pid: int | None, sig: int = signal.SIGKILL, wait: float = 10.0) -> bool:
        """Signal a process group; True once its leader is gone (reaped, if it is our child)."""
        if not pid:
            return True
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def restart_node(self, member: Member, down: float = 0.0) -> float:
        """SIGKILL a node and start it again on its ports and chain; seconds until it listens."""
        self.down.add(member.name)
        self.kill(member.pid)
        time.sleep(down)
        started = time.monotonic()
        assert self.net is not None
        try:
            localnet.start_node(self.net, member)
        finally:
            self.groups.add(member.pid)
        self.down.discard(member.name)
        return time.monotonic() - started

    def restart_miner(self, miner: Miner, down: float = 0.0) -> None:
        """SIGKILL a miner (whatever it was doing) and start it again."""
        self.down.add(miner.name)
        self.kill(miner.pid)
        time.sleep(down)
        self.start_miner(miner)
        self.down.discard(miner.name)

    def exited(self) -> list[str]:
        """Nodes and miners that ended by themselves (not stopped by the soak), with their status."""
        gone = [f"{m.name} (exit {m.proc.returncode})" for m in self.miners
                if m.name not in self.down and m.proc is not None and not m.running]
        gone += [f"{m.name} (pid {m.pid})" for m in (self.net.members if self.net else [])
                 if m.name not in self.down and not alive(m.pid)]
        return gone

    def rpc(self, member: Member, method: str, *params, timeout: float = 5.0):
        return localnet.rpc(member, method, *params, timeout=timeout)

    def generate(self, member: Member) -> list[str]:
        """One `generatetoaddress 1` on `member`: the hashes it answers (the blocks it acknowledges)."""
        target = int(self.rpc(member, "getmininginfo")["next"]["target"], 16)
        tries = min(GENERATE_TRIES, (1 << 256) // (target + 1))
        return self.rpc(member, "generatetoaddress", 1, ADDRESS, tries, timeout=120.0)

    # ------------------------------------------------------------------ stop

    def stop_miners(self) -> list[str]:
        """SIGTERM every miner (they print their summaries), SIGKILL after a grace; the names of
        those that needed SIGKILL."""
        self.down.update(m.name for m in self.miners)
        for m in self.miners:
            if alive(m.pid):
                self.kill(m.pid, signal.SIGTERM, wait=0)
        deadline = time.monotonic() + STOP_GRACE
        while any(alive(m.pid) for m in self.miners) and time.monotonic() < deadline:
            time.sleep(0.05)
        stubborn = [m for m in self.miners if alive(m.pid)]
        for m in stubborn:
            self.kill(m.pid)
        return [m.name for m in stubborn]

    def stop_nodes(self) -> list[str]:
        """SIGTERM every node (`miner net down`); the pids that needed SIGKILL."""
        self.down.update(m.name for m in (self.net.members if self.net else []))
        if (self.folder / localnet.STATE).exists():
            return localnet.down(self.folder)
        return []

    def sweep(self) -> None:
        """SIGKILL whatever is left of every process group this soak started."""
        for group in self.groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for m in self.miners:
            if m.proc is not None:
                try:
                    m.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass

    def leftovers(self) -> list[str]:
        """Processes still alive (zombies aside) in a process group this soak started, as `ps`
        would list them by their group: what must be empty at the end."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
            state, pgrp = fields[0], int(fields[2])
            if pgrp in self.groups and state != "Z":
                found.append(f"{entry.name} ({stat[stat.index('(') + 1:stat.rindex(')')]})")
        return found


def chain_verify(chain: Path, timeout: float = 300.0) -> tuple[bool, str]:
    """`miner chain verify` on a stopped node's file: (ok, its last line)."""
    try:
        out = subprocess.run([sys.executable, "-m", "miner", "chain", "verify", "--chain", str(chain)],
                             capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"did not finish in {timeout:.0f} s"
    lines = (out.stdout + out.stderr).strip().splitlines()
    return out.returncode == 0, lines[-1] if lines else f"exit {out.returncode}"
