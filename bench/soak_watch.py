"""What the soak watches while it runs: the blocks acknowledged to miners and whether their nodes
hold them, pool miners that stop hashing, node memory, and errors in any process's output.

Definitions (docs/benchmarks/soak.md says the same):

- **Acknowledged**: a pool client's `block` event with verdict `accepted` (the pool answers only
  once the chain stored it), a `mine --url http` `block` event `accepted` (submitblock answered
  null), and every hash a `generatetoaddress` call returned. Each is looked up with
  `getblockheader` on the node that acknowledged it as soon as that node answers; "Block not
  found" there is a lost block. A block-meeting share the pool refuses for its own reasons
  (`Block refused: ...`, a low-difficulty refusal) is a refused block; refusals of faults (the
  pool gone: no answer, the connection stale) are counted, not blamed.
- **Idle**: a pool client is idle while its process lives, its worker is listed `connected` by
  the pool's `getstratuminfo`, the pool has a job (`job_age` set), and its own hash counter
  (`powminer_mine_hashes_total` at its `--metrics-port`) has not moved since the last sample;
  the idle time is how long that has held without a break, sampled every second.
- **Memory**: each node's VmRSS from /proc, sampled every second.
- **Errors**: any `Traceback` in any process's output, and any `miner node: error:` line (a node
  turns an unexpected exception into one such line instead of a traceback).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from miner.bench.soak_cluster import Cluster, Miner

from miner.localnet import Member, RpcRefused, alive

IDLE_LIMIT = 5.0  # s
# a node away (refused, reset, timed out, its cookie not yet written) or a reply cut off
RPC_DOWN = (OSError, ValueError, http.client.HTTPException)
# What a miner may be answered for a block without anything being wrong: the pool or node went
# away mid-submission, the job was of a connection or tip already gone, the block was late.
BENIGN = ("stale", "no answer", "job not found", "duplicate", "inconclusive", "cannot reach")


@dataclass
class Ack:
    hash: str
    source: str  # the miner's name, or "generate"
    node: str  # the node that acknowledged it
    at: float
    stored: bool = False
    active: bool = False


class Tail:
    """The complete lines added to a file since the last call (a restarted process appends)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, b""

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *done, self.partial = (self.partial + data).split(b"\n")
        return [line.decode(errors="replace") for line in done]


@dataclass
class Idle:
    hashes: float | None = None
    since: float | None = None  # when the counter last moved while the miner was due to hash
    blamed: bool = False


@dataclass
class Watch:
    cluster: Cluster
    say: Callable[[str, dict], None]
    rss_limit_mib: float = 256.0
    acks: dict[str, Ack] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)
    verdicts: Counter = field(default_factory=Counter)  # block verdicts that were not acknowledgements
    shares: Counter = field(default_factory=Counter)  # our pool clients' share verdicts
    generate: Counter = field(default_factory=Counter)  # generatetoaddress calls, blocks, failed calls
    rss_kib: dict[str, int] = field(default_factory=dict)
    idle: dict[str, Idle] = field(default_factory=dict)
    longest_idle: tuple[float, str] = (0.0, "")
    idle_samples: int = 0  # samples at which a pool miner was due to hash (connected, with work)
    peer_shares: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)
    exits: set[str] = field(default_factory=set)
    _tails: dict[Path, Tail] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def violate(self, kind: str, detail: str) -> None:
        with self.lock:
            self.violations.append((kind, detail))
        self.say(f"VIOLATION {kind}: {detail}", {"event": "violation", "kind": kind, "detail": detail})

    def add_ack(self, block_hash: str, source: str, node: str) -> None:
        with self.lock:
            if block_hash not in self.acks:
                self.acks[block_hash] = Ack(block_hash, source, node, time.time())

    # ------------------------------------------------------------------ output

    def _tail(self, path: Path) -> list[str]:
        tail = self._tails.setdefault(path, Tail(path))
        return tail.lines()

    def read_output(self) -> None:
        """New lines of every process: miners' events, and errors anywhere."""
        for miner in self.cluster.miners:
            for line in self._tail(miner.log):
                self._errors(miner.name, line)
                if miner.kind != "peer" and line.startswith("{"):
                    self._event(miner, line)
        for member in self.cluster.net.members if self.cluster.net else []:
            for line in self._tail(Path(member.folder) / "node.log"):
                self._errors(member.name, line)
                if line.startswith("miner node: error:"):
                    self.violate("error", f"{member.name}: {line[:200]}")

    def _errors(self, who: str, line: str) -> None:
        if "Traceback" in line:
            self.violate("traceback", f"{who}: {line[:200]}")

    def _event(self, miner: Miner, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if event.get("event") == "share":
            self.shares["accepted" if event.get("accepted") else "refused"] += 1
        if event.get("event") != "block":
            return
        verdict = str(event.get("verdict", ""))
        if verdict == "accepted":
            self.add_ack(event["hash_hex"], miner.name, miner.node)
            return
        self.verdicts[verdict.split(":")[0][:40]] += 1
        if not verdict.lower().startswith(BENIGN):
            self.violate("refused-block", f"{miner.name} at {miner.node}: block {event.get('hash_hex')} "
                                          f"answered {verdict!r}")

    # ------------------------------------------------------------------ samples

    def sample(self) -> None:
        for gone in self.cluster.exited():
            if gone not in self.exits:  # a client retries forever and a node runs until stopped
                self.exits.add(gone)
                self.violate("exit", f"{gone} ended by itself")
        self._rss()
        self._idle()
        self.check_acks()

    def _rss(self) -> None:
        for member in self.cluster.net.members:
            try:
                text = Path(f"/proc/{member.pid}/status").read_text()
            except OSError:
                continue
            kib = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:")), 0)
            before = self.rss_kib.get(member.name, 0)
            self.rss_kib[member.name] = max(before, kib)
            if kib > self.rss_limit_mib * 1024 >= before:
                self.violate("rss", f"{member.name} at {kib / 1024:.0f} MiB (limit {self.rss_limit_mib:.0f} MiB)")

    def _idle(self) -> None:
        pool = self.cluster.pool
        try:
            info = self.cluster.rpc(pool, "getstratuminfo", timeout=3.0) if alive(pool.pid) else None
        except (*RPC_DOWN, RpcRefused):
            info = None
        connected = set()
        if info is not None:
            for w in info["workers"]:
                if w["connected"] and info.get("job_age") is not None:
                    connected.add(w["worker"])
                self.peer_shares[(pool.pid, w["worker"])] = (w["accepted"], w["blocks"])
        now = time.monotonic()
        for miner in self.cluster.miners:
            if miner.kind != "pool":
                continue
            state = self.idle.setdefault(miner.name, Idle())
            if not (miner.running and miner.worker in connected):
                state.since, state.hashes, state.blamed = None, None, False
                continue
            hashes = hashes_total(miner.metrics_port)
            self.idle_samples += 1
            if state.since is None or (hashes is not None and hashes != state.hashes):
                state.since, state.hashes, state.blamed = now, hashes, False
                continue
            idle = now - state.since
            if idle > self.longest_idle[0]:
                self.longest_idle = (idle, miner.name)
            if idle > IDLE_LIMIT and not state.blamed:
                state.blamed = True
                self.violate("idle", f"{miner.name} hashed nothing for {idle:.1f} s while connected "
                                     "to a pool with work")

    def check_acks(self, members: list[Member] | None = None) -> None:
        """Look up every acknowledged block not yet found on its node (on `members`: on each of
        them, at the end)."""
        with self.lock:
            pending = [a for a in self.acks.values() if members is not None or not a.stored]
        for ack in pending:
            where = members if members is not None else [self.cluster.member(ack.node)]
            for member in where:
                self._look_up(ack, member)

    def _look_up(self, ack: Ack, member: Member) -> bool | None:
        if not alive(member.pid):
            return None
        try:
            header = self.cluster.rpc(member, "getblockheader", ack.hash, timeout=5.0)
        except RpcRefused as exc:
            if exc.code == -5 and member.name == ack.node:
                self.violate("lost-block", f"{ack.hash} acknowledged to {ack.source} by {ack.node} "
                                           f"is not stored there")
                ack.stored = True  # blamed once
            return False
        except RPC_DOWN:
            return None
        if member.name == ack.node:
            ack.stored = True
        ack.active = ack.active or header.get("confirmations", -1) > 0
        return True


def hashes_total(port: int) -> float | None:
    """The sum of a miner's `powminer_mine_hashes_total` over its backends; None if unreadable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2.0) as resp:
            text = resp.read().decode()
    except RPC_DOWN:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("powminer_mine_hashes_total"))
