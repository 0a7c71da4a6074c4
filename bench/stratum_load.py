"""Load on the node's Stratum server: validated shares per second, submit latency, memory per miner.

    python -m miner.bench.stratum_load [--miners 1000] [--seconds 10] [--json]

Starts a node on a fresh chain of the `local` preset's rules started at 2^26 hashes a block (so no
share is a block; the preset itself starts at 2^17 and ramps) with Stratum on 127.0.0.1 and the
share difficulty pinned at 1e-9 (about half of all hashes are shares, and vardiff cannot move it),
connects `--miners` miners (subscribe, authorize), and measures the node's resident size before and
after (in the first round). Each miner then has real shares for its own extranonce1, found
beforehand with hashlib, and submits them one after another (a new one when the last is answered)
for `--seconds`. Every share is rebuilt and hashed by the server. Reported: shares answered per
second, how many were accepted, refused or never answered, p50/p99 submit latency, and the node's
memory per connection.

The miners' count of accepted shares is checked against the server's own (`getstratuminfo`,
read before and after each round): a share the server counted but never answered as accepted,
or the other way round, is a lost or invented verdict, and the bench fails (exit 1) on it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from miner.bench.measure import rss_kib

DIFF1 = 0xFFFF << 208
SHARE_DIFFICULTY = 1e-9


def _dsha(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


def _shares(job: list, extranonce1: str, size: int, count: int, offset: int) -> list[str]:
    """`count` submit lines that meet SHARE_DIFFICULTY, for this miner's extranonce1."""
    _, prevhash, coinb1, coinb2, branch, version, nbits, ntime, _ = job
    target = int(DIFF1 / SHARE_DIFFICULTY)
    prev = b"".join(bytes.fromhex(prevhash)[i:i + 4][::-1] for i in range(0, 32, 4))
    out = []
    en2 = (offset % (1 << (8 * size))).to_bytes(size, "big")
    root = _dsha(bytes.fromhex(coinb1) + bytes.fromhex(extranonce1) + en2 + bytes.fromhex(coinb2))
    for h in branch:
        root = _dsha(root + bytes.fromhex(h))
    head = (int(version, 16).to_bytes(4, "little") + prev + root + int(ntime, 16).to_bytes(4, "little")
            + int(nbits, 16).to_bytes(4, "little"))
    nonce = 0
    while len(out) < count:
        if int.from_bytes(_dsha(head + nonce.to_bytes(4, "little")), "little") <= target:
            out.append(json.dumps({"id": 10 + len(out), "method": "mining.submit",
                                   "params": ["load.miner", job[0], en2.hex(), ntime, f"{nonce:08x}"]}))
        nonce += 1
    return out


class _Miner:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.job: list | None = None

    async def request(self, line: str, rid: int) -> dict:
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()
        while True:
            msg = await self._next()
            if msg.get("id") == rid:
                return msg

    async def _next(self) -> dict:
        """The server's next line; a job it brings is kept as this miner's."""
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        msg = json.loads(line)
        if msg.get("method") == "mining.notify":
            self.job = msg["params"]
        return msg

    async def start(self) -> tuple[str, int]:
        sub = await self.request(json.dumps({"id": 1, "method": "mining.subscribe", "params": ["load"]}), 1)
        await self.request(json.dumps({"id": 2, "method": "mining.authorize", "params": ["load.miner", "x"]}), 2)
        while self.job is None:
            await self._next()
        return sub["result"][1], sub["result"][2]


async def _run(port: int, pid: int, miners: int, seconds: float) -> dict:
    gate = asyncio.Semaphore(100)  # miners arrive a hundred at a time, each subscribing at once

    async def arrive() -> tuple[_Miner, tuple[str, int]]:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            miner = _Miner(reader, writer)
            return miner, await miner.start()
    arrived = await asyncio.gather(*(arrive() for _ in range(miners)))
    conns = [m for m, _ in arrived]
    starts = [s for _, s in arrived]
    rss_after = rss_kib(pid)
    per_miner = max(4, int(30_000 * seconds / miners))  # more than the server answers in time
    lines = [_shares(m.job, en1, size, per_miner, k) for k, (m, (en1, size)) in enumerate(zip(conns, starts))]
    latencies: list[float] = []
    results = {"accepted": 0, "refused": 0, "unanswered": 0}
    deadline = time.perf_counter() + seconds

    async def submit_all(m: _Miner, mine: list[str]) -> None:
        for i, line in enumerate(mine):
            if time.perf_counter() >= deadline:
                return
            t0 = time.perf_counter()
            try:
                reply = await asyncio.wait_for(m.request(line, 10 + i), 30)
            except (asyncio.TimeoutError, ConnectionError, ValueError):
                results["unanswered"] += 1
                return
            latencies.append(time.perf_counter() - t0)
            results["accepted" if reply.get("result") is True else "refused"] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(submit_all(m, mine) for m, mine in zip(conns, lines)))
    elapsed = time.perf_counter() - t0
    for m in conns:
        m.writer.close()
    ordered = sorted(latencies)
    return {"miners": miners, "seconds": round(elapsed, 2), **results,
            "shares_per_second": round(len(latencies) / elapsed),
            "p50_ms": round(1000 * ordered[len(ordered) // 2], 2) if ordered else None,
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2) if ordered else None,
            "rss_connected_kib": rss_after}


def run(miners: int = 1000, seconds: float = 10.0, runs: int = 1) -> dict:
    from dataclasses import replace

    from miner.chain.chain import Chain
    from miner.consensus.params import WINDOWED_START_BITS, preset
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stratum.sqlite"
        Chain.create(path, replace(preset("local", int(time.time()) - 60), genesis_bits=WINDOWED_START_BITS)).close()
        node = subprocess.Popen([sys.executable, "-m", "miner", "node", "--chain", str(path), "--rpc-port", "0",
                                 "--stratum-port", "0", "--stratum-difficulty", str(SHARE_DIFFICULTY),
                                 "--stratum-max-difficulty", str(SHARE_DIFFICULTY), "--stratum-min-difficulty",
                                 str(SHARE_DIFFICULTY), "--stratum-max-miners", str(miners + 16),
                                 "--backend", "ref", "--json"], stdout=subprocess.PIPE, text=True)
        try:
            ready = json.loads(node.stdout.readline())
            cookie = Path(ready["cookie"])
            idle = rss_kib(node.pid)
            rounds, server_accepted = [], 0
            for _ in range(runs):
                before = _rpc(ready["url"], cookie, "getstratuminfo")["accepted"]
                rounds.append(asyncio.run(_run(ready["stratum_port"], node.pid, miners, seconds)))
                server_accepted += _rpc(ready["url"], cookie, "getstratuminfo")["accepted"] - before
            per_miner = round((rounds[0]["rss_connected_kib"] - idle) / miners, 1)  # the first round's
            height = _rpc(ready["url"], cookie, "getblockcount")
        finally:
            node.terminate()
            try:
                node.wait(30)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
    out = {key: statistics.median(r[key] for r in rounds) for key in
           ("shares_per_second", "p50_ms", "p99_ms", "accepted", "refused", "unanswered")}
    return {"miners": miners, "seconds": seconds, "runs": runs, "blocks": height, "kib_per_miner": per_miner, **out,
            "accepted_total": sum(r["accepted"] for r in rounds), "server_accepted_total": server_accepted}


def _rpc(url: str, cookie: Path, method: str):
    """One JSON-RPC call to the node under load, with its cookie; the result."""
    import base64
    import urllib.request
    body = json.dumps({"method": method, "params": [], "id": 1}).encode()
    req = urllib.request.Request(url + "/", data=body,
                                 headers={"Authorization": "Basic " + base64.b64encode(cookie.read_bytes()).decode()})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["result"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m miner.bench.stratum_load", description=__doc__.splitlines()[0])
    p.add_argument("--miners", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.miners < 1 or args.seconds <= 0 or args.runs < 1:
        print("stratum_load: --miners and --runs must be at least 1 and --seconds positive", file=sys.stderr)
        return 2
    result = run(args.miners, args.seconds, args.runs)
    agree = result["accepted_total"] == result["server_accepted_total"]
    if args.json:
        print(json.dumps(result))
    if not agree:
        print(f"stratum_load: the miners counted {result['accepted_total']:,} shares accepted, the server "
              f"{result['server_accepted_total']:,}", file=sys.stderr)
        return 1
    if args.json:
        return 0
    print(f"{result['miners']} miners, {result['runs']} runs of {result['seconds']:g} s, medians: "
          f"{result['shares_per_second']:,.0f} shares/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
          f"{result['accepted']:,.0f} accepted, {result['refused']:,.0f} refused, {result['unanswered']:,.0f} "
          f"unanswered, {result['kib_per_miner']} KiB per miner; blocks found {result['blocks']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
