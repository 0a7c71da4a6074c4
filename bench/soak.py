"""`python -m miner.bench.soak`: the whole system for N minutes under faults, with its invariants
checked while it runs and at the end; exit 1 naming each violation, 0 when none.

    python -m miner.bench.soak --minutes N [--miners K] [--nodes M] [--faults] [--seed S]
                               [--dir D] [--json] [--rss-limit MIB]

It runs M `miner node`s on one `local` chain (ASERT: the difficulty moves block by block) wired
as a ring over peer-to-peer (`miner net`), Stratum on the first with K `miner mine --url
stratum+tcp://` clients (and pooler's cpuminer and cpuminer-opt when CPUMINER / CPUMINER_OPT name
them), one `miner mine --url http://` at the second node, and a `generatetoaddress 1` every few
seconds at each node in turn. With `--faults`, one fault at a time on a seeded schedule
(`soak_faults`). What is checked, and how each check is defined, is in `soak_watch` and
`soak_report`. Why a soak at all: unit and property tests stage what their author thought of;
the lost pool blocks of issue 32 only showed under moving difficulty, restarts and time.

Everything it starts is stopped at the end, also on Ctrl-C, SIGTERM or an exception of its own,
and it checks that no process of theirs is left.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from miner.bench.soak_cluster import Cluster
from miner.bench.soak_faults import Faults
from miner.bench.soak_report import final_blocks, table, verify_chains
from miner.bench.soak_watch import RPC_DOWN, Watch

from miner.localnet import RpcRefused, alive

SAMPLE_EVERY = 1.0  # s
GENERATE_EVERY = 3.0  # s between generatetoaddress calls
WARM_UP = 5.0  # s before the first fault: every miner hashing, the first blocks found
HEAL_ROOM = 15.0  # s: no fault starts this close to the end, so each one heals inside the run


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m miner.bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, required=True, help="how long to run (after the start-up)")
    p.add_argument("--miners", type=int, default=3, help="our Stratum clients at the pool (default 3)")
    p.add_argument("--nodes", type=int, default=3, help="nodes in the ring (default 3)")
    p.add_argument("--faults", action="store_true", help="inject faults on a seeded schedule")
    p.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: from the clock, printed)")
    p.add_argument("--dir", default=None, help="a new folder for the nodes' chains and every log "
                                              "(default: a temporary one, kept)")
    p.add_argument("--rss-limit", type=float, default=256.0, help="MiB a node may use (default 256)")
    p.add_argument("--json", action="store_true", help="one JSON object per event, and the result")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.miners < 0 or args.nodes < 1:
        p.error("--minutes must be positive, --miners at least 0, --nodes at least 1")
    if args.seed is None:
        args.seed = int(time.time()) % 100_000
    return args


class Soak:
    def __init__(self, args: argparse.Namespace, folder: Path):
        self.args, self.folder = args, folder
        self.cluster = Cluster(folder, args.nodes, args.miners)
        self.watch = Watch(self.cluster, self.say, args.rss_limit)
        self.faults = Faults(self.cluster, self.watch, random.Random(args.seed), self.say)
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def say(self, text: str, event: dict) -> None:
        print(json.dumps(event) if self.args.json else text, flush=True)

    def run(self) -> dict:
        a = self.args
        self.say(f"soak: {a.minutes:g} min, {a.nodes} nodes, {a.miners} pool miners, faults "
                 f"{'on' if a.faults else 'off'}, seed {a.seed}, in {self.folder}",
                 {"event": "soak", "minutes": a.minutes, "nodes": a.nodes, "miners": a.miners,
                  "faults": a.faults, "seed": a.seed, "dir": str(self.folder)})
        threads = []
        try:
            self.cluster.start()
            self.say(f"[{self.now():7.1f}s] up: " + ", ".join(m.name for m in self.cluster.miners),
                     {"event": "up", "at": self.now(), "miners": [m.name for m in self.cluster.miners]})
            threads = [threading.Thread(target=self._sampler, daemon=True),
                       threading.Thread(target=self._generator, daemon=True)]
            for t in threads:
                t.start()
            self._schedule(time.monotonic() + a.minutes * 60)
            self.stop.set()
            for t in threads:
                t.join(150)
            return self._finish()
        finally:
            self.stop.set()
            self.cluster.stop_miners()
            self.cluster.stop_nodes()
            self.cluster.sweep()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def _schedule(self, end: float) -> None:
        next_fault = time.monotonic() + WARM_UP
        while time.monotonic() < end:
            if self.args.faults and time.monotonic() >= next_fault and time.monotonic() + HEAL_ROOM < end:
                self.faults.inject(self.t0)
                next_fault = time.monotonic() + self.faults.next_gap()
            time.sleep(0.2)

    def _sampler(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            try:
                self.watch.read_output()
                self.watch.sample()
            except Exception as exc:  # a defect of the soak's own: it must fail the run, not blind it
                self.watch.violate("soak", f"the sampler failed: {exc!r}")

    def _generator(self) -> None:
        """`generatetoaddress 1` at each node in turn: the node's own miner among the others."""
        turn = 0
        while not self.stop.wait(GENERATE_EVERY):
            member = self.cluster.net.members[turn % len(self.cluster.net.members)]
            turn += 1
            if not alive(member.pid):
                continue
            self.watch.generate["calls"] += 1
            try:
                hashes = self.cluster.generate(member)
            except (*RPC_DOWN, RpcRefused):
                self.watch.generate["failed"] += 1
                continue  # killed mid-call, or its cookie mid-rewrite: nothing was acknowledged
            except Exception as exc:
                self.watch.violate("soak", f"the generator failed: {exc!r}")
                continue
            self.watch.generate["blocks"] += len(hashes)
            for h in hashes:
                self.watch.add_ack(h, "generate", member.name)

    def _finish(self) -> dict:
        """Miners stopped, the nodes left to agree, every block looked up, nodes stopped, files verified."""
        stubborn = self.cluster.stop_miners()
        if stubborn:
            self.watch.violate("stop", f"miners needing SIGKILL: {stubborn}")
        self.watch.read_output()
        final = self.faults.converge("the miners stopped")
        blocks = final_blocks(self.cluster, self.watch)
        if blocks["acknowledged"] == 0:
            self.watch.violate("no-blocks", "no block was acknowledged to any miner: the run proved nothing")
        killed = self.cluster.stop_nodes()
        if killed:
            self.watch.violate("stop", f"nodes needing SIGKILL: {killed}")
        self.watch.read_output()
        verify = verify_chains(self.cluster, self.watch)
        self.cluster.sweep()
        left = self.cluster.leftovers()
        if left:
            self.watch.violate("leftovers", ", ".join(left))
        w = self.watch
        peers = {}
        for (_, worker), (acc, blk) in w.peer_shares.items():
            if worker.startswith("soak.cpuminer"):
                total = peers.setdefault(worker, [0, 0])
                total[0] += acc
                total[1] += blk
        return {
            "seconds": self.now(), "seed": self.args.seed, "final_converge_s": final, "blocks": blocks,
            "faults": {**self.faults.counts(), "injected": self.faults.injected},
            "watch": {"rss_kib": w.rss_kib, "longest_idle": [round(w.longest_idle[0], 1), w.longest_idle[1]],
                      "idle_samples": w.idle_samples, "verdicts": w.verdicts, "shares": w.shares,
                      "generate": w.generate},
            "peers": [f"{k.split('.', 1)[1]} {v[0]}, {v[1]}" for k, v in peers.items()],
            "verify": verify, "errors": sum(1 for k, _ in w.violations if k in ("traceback", "error")),
            "leftovers": left, "rss_limit_mib": self.args.rss_limit, "violations": list(w.violations),
        }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="miner-soak-"))
    if folder.exists() and any(folder.iterdir()):
        print(f"soak: {folder} is not empty; give a new folder", file=sys.stderr)
        return 2

    def interrupted(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # one stop; the cleanup runs whole
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, interrupted)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    soak = Soak(args, folder)
    try:
        result = soak.run()
    except KeyboardInterrupt:
        left = soak.cluster.leftovers()
        print(f"soak: interrupted; stopped every process it started ({len(left)} left)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({"event": "result", **result}, default=dict))
    else:
        print(table(result))
    for kind, detail in result["violations"]:
        print(f"soak: violation: {kind}: {detail}", file=sys.stderr)
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
