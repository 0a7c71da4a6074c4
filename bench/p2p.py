"""Peer-to-peer figures: how fast a new node syncs a long chain from a peer, and how fast a
block crosses a line of nodes.

    python -m miner.bench.p2p sync [--blocks 10000] [--runs 3] [--json]
    python -m miner.bench.p2p propagate [--nodes 5] [--blocks 30] [--json]

`sync`: a regtest-core chain of `--blocks` blocks is built once (in-process, every block
validated and stored as a node stores it), a node serves it on 127.0.0.1 and a fresh node with
`--connect` to it syncs; the time is from the new node's start to its last block stored (its
own `block` event), median over `--runs`.

`--before DIR` (either command) runs every round twice, alternating, once with this code and
once with the source tree in DIR (`git archive COMMIT | tar -x -C DIR`), so a change is measured
against the code before it on the same machine at the same time.

`propagate`: `--nodes` nodes in a line (each `--connect`s to the one before); the first mines
one block at a time (generatetoaddress) and every node's `block` event carries the wall-clock
time it stored the block, so a block's propagation is the last node's time minus the first's.
Median and p99 over `--blocks` blocks.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from miner.chain.chain import Chain
from miner.consensus.params import preset
from miner.primitives import p2p
from miner.primitives.block import Block
from miner.primitives.coinbase import coinbase_template
from miner.primitives.compact import bits_to_target
from miner.primitives.header import BlockHeader
from miner.primitives.merkle import merkle_root
from miner.primitives.serialize import varint
from miner.primitives.transaction import Transaction, txid

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def build_chain(path: Path, blocks: int) -> None:
    """A regtest-core chain of `blocks` blocks, each solved with hashlib and stored through the
    chain's own validation."""
    params = preset("regtest-core", 0)
    target = bits_to_target(params.genesis_bits)
    with Chain.create(path, params) as chain:
        parent, start = chain.tip_hash, params.genesis_time
        for height in range(1, blocks + 1):
            coinbase = coinbase_template(height, b"bench p2p").build(0)
            header = BlockHeader(0x20000000, parent, merkle_root([txid(coinbase)]), start + height,
                                 params.genesis_bits, 0)
            while not header.meets_target(target):
                header = header.with_nonce(header.nonce + 1)
            block = Block(header, (Transaction.parse(coinbase),))
            chain.add_block(block, now=start + blocks + 3600)
            parent = block.hash


# --------------------------------------------------------------------------- what a stranger sends
# (miner.bench.p2p_abuse)

BITS = 0x207FFFFF  # regtest's: about two hashes a header
_TARGET = bits_to_target(BITS)


def _solve(header: BlockHeader) -> BlockHeader:
    while not header.meets_target(_TARGET):
        header = header.with_nonce(header.nonce + 1)
    return header


def fake_headers(count: int, start: BlockHeader, tag: bytes) -> list[bytes]:
    """`count` linked headers on `start`, regtest's bits, nothing behind them: messages of 2,000."""
    out, prev, run = [], start, []
    for i in range(count):
        prev = _solve(BlockHeader(0x20000000, prev.hash(), hashlib.sha256(tag + b"%d" % i).digest(),
                                  prev.time + 1, BITS, 0))
        run.append(prev)
        if len(run) == p2p.MAX_HEADERS:
            out.append(p2p.headers_payload(run))
            run = []
    if run:
        out.append(p2p.headers_payload(run))
    return out


def big_tx(size: int, tag: bytes) -> bytes:
    """A valid non-coinbase transaction of about `size` bytes (one output's script)."""
    script = b"\x6a" + bytes(size)  # OP_RETURN and zeros: the chain keeps no coin set
    return (struct.pack("<i", 1) + varint(1) + hashlib.sha256(tag).digest() + struct.pack("<I", 0) + varint(0)
            + struct.pack("<I", 0xFFFFFFFF) + varint(1) + struct.pack("<q", 0) + varint(len(script)) + script
            + struct.pack("<I", 0))


def big_block(parent: BlockHeader, height: int, tag: bytes, size: int = 990_000) -> Block:
    coinbase = coinbase_template(height, b"abuse " + tag).build(0)
    extra = big_tx(size, tag)
    header = _solve(BlockHeader(0x20000000, parent.hash(), merkle_root([txid(coinbase), txid(extra)]),
                                parent.time + 1, BITS, 0))
    return Block(header, (Transaction.parse(coinbase), Transaction.parse(extra)))


def build_victim_chain(path: Path, blocks: int = 120) -> BlockHeader:
    """A regtest-core chain of `blocks` blocks, the last about 1 MB; its header."""
    params = preset("regtest-core", 0)
    with Chain.create(path, params) as chain:
        prev = chain.tip()
        for height in range(1, blocks + 1):
            if height < blocks:
                cb = coinbase_template(height, b"victim").build(0)
                header = _solve(BlockHeader(0x20000000, prev.hash(), merkle_root([txid(cb)]), prev.time + 1, BITS, 0))
                block = Block(header, (Transaction.parse(cb),))
            else:
                block = big_block(prev, height, b"victim")
            chain.add_block(block, now=prev.time + 10_000)
            prev = block.header
        return prev


def code_env(code: Path | None) -> dict:
    """Popen's arguments that run `python -m miner` from the source tree `code` (None: this one):
    started there with it first on the path, its `miner` is imported before the installed one."""
    if code is None:
        return {}
    return {"cwd": str(code), "env": {**os.environ, "PYTHONPATH": str(code)}}


class Node:
    """`miner node` on the regtest-core chain, its JSON events read as they come."""

    def __init__(self, folder: Path, *extra: str, code: Path | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.started = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "miner", "node", "--chain", str(folder / "chain.sqlite"), "--preset",
             "regtest-core", "--rpc-port", "0", "--listen", "0", "--backend", "ref", "--json", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **code_env(code))
        self.ready = json.loads(self.proc.stdout.readline())
        self.blocks: dict[str, float] = {}
        self.last_height = 0
        self.events: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            event = json.loads(line)
            self.events.append(event)
            if event.get("event") == "block":
                self.blocks[event["hash"]] = event["at"]
                self.last_height = max(self.last_height, event["height"])

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.ready['p2p_port']}"

    def call(self, method: str, *params):
        auth = base64.b64encode(Path(self.ready["cookie"]).read_bytes()).decode()
        req = urllib.request.Request(self.ready["url"], json.dumps({"method": method, "params": list(params)}).encode(),
                                     headers={"Authorization": f"Basic {auth}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait(check, within: float) -> None:
    end = time.monotonic() + within
    while not check():
        if time.monotonic() > end:
            raise TimeoutError("not reached in time")
        time.sleep(0.01)


def bench_sync(blocks: int, runs: int, before: Path | None = None) -> dict:
    codes = {"after": None, "before": before} if before is not None else {"this": None}
    with tempfile.TemporaryDirectory(prefix="p2p-sync-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build_chain(root / "seed.sqlite", blocks)
        built = time.perf_counter() - t0
        times: dict[str, list[float]] = {name: [] for name in codes}
        for run in range(runs):
            for name, code in codes.items():  # alternating, a fresh pair of nodes each time
                (root / f"a{run}{name}").mkdir()
                shutil.copy(root / "seed.sqlite", root / f"a{run}{name}" / "chain.sqlite")
                server = Node(root / f"a{run}{name}", code=code)
                try:
                    client = Node(root / f"b{run}{name}", "--connect", server.target, code=code)
                    try:
                        _wait(lambda c=client: c.last_height >= blocks, 600)
                        times[name].append(max(client.blocks.values()) - client.started)
                    finally:
                        client.stop()
                finally:
                    server.stop()
    out: dict = {"blocks": blocks, "runs": runs, "build_s": round(built, 2)}
    for name, got in times.items():
        out[name] = {"seconds": [round(t, 2) for t in got], "median_s": round(statistics.median(got), 2),
                     "blocks_per_s": round(blocks / statistics.median(got))}
    return out


def bench_propagate(count: int, blocks: int, before: Path | None = None) -> dict:
    if before is not None:
        return {"after": _propagate(count, blocks), "before": _propagate(count, blocks, code=before)}
    return _propagate(count, blocks)


def _propagate(count: int, blocks: int, code: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="p2p-line-") as tmp:
        root = Path(tmp)
        line: list[Node] = []
        delays = []
        try:
            for i in range(count):
                line.append(Node(root / f"n{i}", *(["--connect", line[-1].target] if line else []), code=code))
            _wait(lambda: all(n.call("getconnectioncount") == (1 if i in (0, count - 1) else 2)
                              for i, n in enumerate(line)), 30)
            for _ in range(blocks):
                block = line[0].call("generatetoaddress", 1, ADDRESS)[0]
                _wait(lambda b=block: all(b in n.blocks for n in line), 30)
                delays.append(max(n.blocks[block] for n in line) - line[0].blocks[block])
        finally:
            for n in line:
                n.stop()
    ordered = sorted(delays)
    return {"nodes": count, "blocks": blocks, "median_ms": round(1000 * statistics.median(ordered), 1),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
            "max_ms": round(1000 * ordered[-1], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miner.bench.p2p", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sync", help="a new node syncing a long chain from a peer")
    s.add_argument("--blocks", type=int, default=10_000)
    s.add_argument("--runs", type=int, default=3)
    p = sub.add_parser("propagate", help="a block crossing a line of nodes")
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--blocks", type=int, default=30)
    for sp in (s, p):
        sp.add_argument("--json", action="store_true")
        sp.add_argument("--before", type=Path, help="also run the source tree in this folder, alternating")
    args = parser.parse_args(argv)
    result = (bench_sync(args.blocks, args.runs, args.before) if args.what == "sync"
              else bench_propagate(args.nodes, args.blocks, args.before))
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
