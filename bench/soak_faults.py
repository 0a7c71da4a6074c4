"""The soak's faults, one at a time on a seeded schedule, and how soon the nodes agree after each.

Kinds, each round of the schedule taking every kind once in a seeded order, with seeded gaps:
- `kill-node`: SIGKILL a plain node (neither the pool nor the http miner's), start it again on
  its ports and chain after a seeded pause;
- `kill-pool`: the same for the node that serves Stratum;
- `partition`: cut one node off (on the side that keeps each connection: `addnode remove`, so it
  is not made again, then `disconnectnode`), hold the cut while both sides mine, then heal it
  (`addnode add`);
- `kill-miner`: SIGKILL one of our miners (pool or http) mid-run and start it again.
A heal is the end of a fault (the node listening again, the link added back); from it the nodes
must agree on one tip within `CONVERGE_LIMIT` seconds, each time recorded.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from miner.bench.soak_cluster import Cluster
from miner.bench.soak_watch import RPC_DOWN, Watch

from miner.errors import MinerError
from miner.localnet import Member, RpcRefused, alive

KINDS = ("kill-node", "kill-pool", "partition", "kill-miner")
CONVERGE_LIMIT = 10.0  # s
CONVERGE_WAIT = 30.0  # s: how long a late convergence is still timed


@dataclass
class Faults:
    cluster: Cluster
    watch: Watch
    rng: random.Random
    say: Callable[[str, dict], None]
    # seconds between a heal and the next fault: a 60-second run gets each kind once
    gap: tuple[float, float] = (3.0, 6.0)
    injected: list[dict] = field(default_factory=list)
    converged: list[float] = field(default_factory=list)
    late: list[dict] = field(default_factory=list)  # convergences past the limit (ties excused)
    ties: int = 0  # heals after which the nodes went through a tie before agreeing
    last_tie: bool = False
    _round: list[str] = field(default_factory=list)

    def next_gap(self) -> float:
        return self.rng.uniform(*self.gap)

    def inject(self, t0: float) -> dict:
        """The next fault of the schedule, done and healed; its record."""
        if not self._round:
            self._round = [k for k in KINDS if self._possible(k)]
            self.rng.shuffle(self._round)
        kind = self._round.pop(0)
        started = time.monotonic()
        record = {"kind": kind, "at": round(started - t0, 1)}
        try:
            record.update(getattr(self, "_" + kind.replace("-", "_"))())
        except MinerError as exc:  # a node that does not come back (its chain refused, a port taken)
            self.watch.violate("restart", f"{kind}: {exc}")
            record["error"] = str(exc)
        if kind != "kill-miner":
            record["converge_s"] = self.converge(kind)
            if self.last_tie:
                record["tie"] = True
                self.ties += 1
        self.injected.append(record)
        self.say(f"[{record['at']:7.1f}s] fault {kind}: " + ", ".join(
            f"{k} {v}" for k, v in record.items() if k not in ("kind", "at")), {"event": "fault", **record})
        return record

    def _possible(self, kind: str) -> bool:
        return kind != "kill-node" or bool(self._plain_nodes())

    def _plain_nodes(self) -> list[Member]:
        busy = {self.cluster.pool.name} | {m.node for m in self.cluster.miners}
        return [m for m in self.cluster.net.members if m.name not in busy]

    # ------------------------------------------------------------------ the kinds

    def _kill_node(self) -> dict:
        return self._restart(self.rng.choice(self._plain_nodes()))

    def _kill_pool(self) -> dict:
        return self._restart(self.cluster.pool)

    def _restart(self, member: Member) -> dict:
        pid, down = member.pid, self.rng.uniform(0.5, 3.0)
        start_s = self.cluster.restart_node(member, down)
        return {"target": member.name, "pid": pid, "down_s": round(down, 1), "start_s": round(start_s, 1)}

    def _kill_miner(self) -> dict:
        ours = [m for m in self.cluster.miners if m.kind in ("pool", "http")]
        miner = self.rng.choice(ours)
        pid, down = miner.pid, self.rng.uniform(0.5, 3.0)
        self.cluster.restart_miner(miner, down)
        return {"target": miner.name, "pid": pid, "down_s": round(down, 1)}

    def _partition(self) -> dict:
        members = self.cluster.net.members
        cut = self.rng.choice(members)
        links = [(m, other) for m in members for other in members
                 if other is not m and (m is cut or other is cut) and other.p2p_port in m.connect]
        for owner, target in links:
            self._call(owner, "addnode", f"127.0.0.1:{target.p2p_port}", "remove")
            self._call(owner, "disconnectnode", f"127.0.0.1:{target.p2p_port}")
        hold = self.rng.uniform(4.0, 10.0)  # a few block times: both sides mine, the heal reorganises one
        time.sleep(hold)
        peers = self._call(cut, "getconnectioncount")
        if peers:  # nothing may have connected it again while it was cut off
            self.watch.violate("partition", f"{cut.name} had {peers} peers while cut off")
        tips = self.tips()
        diverged = len({tip for name, tip in tips.items() if name != cut.name} | {tips[cut.name]}) > 1
        for owner, target in links:
            self._call(owner, "addnode", f"127.0.0.1:{target.p2p_port}", "add")
        return {"target": cut.name, "links": len(links), "hold_s": round(hold, 1), "peers_while_cut": peers,
                "diverged": diverged}

    def _call(self, member: Member, method: str, *params):
        try:
            return self.cluster.rpc(member, method, *params)
        except RpcRefused as exc:  # -29: the link was already down (a reconnect in progress)
            return f"refused {exc.code}"
        except RPC_DOWN as exc:
            self.watch.violate("rpc", f"{member.name}: {method} failed: {exc}")
            return None

    # ------------------------------------------------------------------ convergence

    def converge(self, after: str, limit: float = CONVERGE_LIMIT) -> float | None:
        """Seconds until every node reports the same best block, recorded; a violation past
        `limit`, unless the nodes were then at a tie: tips of equal chainwork, where each node
        keeps the one it saw first (as Core does) until the next block breaks it. A tie gets
        until CONVERGE_WAIT; the record says how late it was either way."""
        started = time.monotonic()
        tie = None  # whether the disagreement at the limit was a tie
        self.last_tie = False  # whether the nodes went through a tie on the way
        while (took := time.monotonic() - started) < CONVERGE_WAIT:
            tips = self.tips(work=True)
            values = set(tips.values())
            if None not in values and len({h for h, _ in values}) == 1:
                self.converged.append(took)
                if took > limit:
                    self.late.append({"after": after, "s": round(took, 2), "tie": bool(tie)})
                    if not tie:
                        self.watch.violate("converge", f"nodes agreed {took:.1f} s after {after} (limit {limit:.0f} s)")
                return round(took, 2)
            at_tie = None not in values and len({w for _, w in values}) == 1
            self.last_tie = self.last_tie or at_tie
            if took > limit and tie is None:
                tie = at_tie
            time.sleep(0.1)
        self.watch.violate("converge", f"nodes did not agree within {CONVERGE_WAIT:.0f} s after {after}: {self.tips()}")
        return None

    def tips(self, work: bool = False) -> dict:
        """Each node's best block (with its chainwork, if `work`); None for a node not answering."""
        out: dict = {}
        for member in self.cluster.net.members:
            try:
                info = self.cluster.rpc(member, "getblockchaininfo") if alive(member.pid) else None
            except (*RPC_DOWN, RpcRefused):
                info = None
            out[member.name] = None if info is None else (
                (info["bestblockhash"], info["chainwork"]) if work else info["bestblockhash"])
        return out

    def counts(self) -> dict:
        done = [r["kind"] for r in self.injected]
        times = self.converged
        return {"by_kind": {k: done.count(k) for k in KINDS if done.count(k)}, "total": len(done),
                "partitions_diverged": sum(1 for r in self.injected if r.get("diverged")),
                "converge_max_s": round(max(times), 2) if times else None,
                "converge_median_s": round(statistics.median(times), 2) if times else None,
                "converge_count": len(times), "late": self.late, "ties": self.ties}
