"""Load on `miner node`: requests per second and latency percentiles with many concurrent clients.

    python -m miner.bench.rpc_load [--clients 50] [--seconds 5] [--runs 3] [--json]

Starts a node on a fresh easy chain (its own temporary folder, 127.0.0.1, a free port), then
for each method has `--clients` aiohttp sessions send requests back to back for `--seconds`:
- getblocktemplate: the template each miner asks for (served from memory between changes);
- submitblock: real, distinct, solved sibling blocks on the tip, built beforehand, so every
  request is decoded, checked in full (proof of work, merkle root, coinbase, witness rules) and
  stored (the first becomes the tip; the rest are kept as side branches: "inconclusive").
The median over `--runs` of each figure is reported; the node is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(url: str, auth: str, clients: int, seconds: float, make_body) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": auth, "Content-Type": "application/json"}

    async def client(k: int) -> None:
        nonlocal errors
        async with aiohttp.ClientSession(headers=headers) as session:
            i = 0
            while time.perf_counter() < deadline:
                body = make_body(k, i)
                if body is None:
                    return
                t0 = time.perf_counter()
                async with session.post(url, data=body) as resp:
                    reply = await resp.json(content_type=None)
                latencies.append(time.perf_counter() - t0)
                if resp.status != 200 or reply.get("error"):
                    errors += 1
                i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    elapsed = time.perf_counter() - t0
    return {"requests": len(latencies), "errors": errors, "per_second": len(latencies) / elapsed,
            "p50_ms": 1000 * _percentile(latencies, 0.50) if latencies else 0.0,
            "p99_ms": 1000 * _percentile(latencies, 0.99) if latencies else 0.0}


def _sibling_blocks(template: dict, count: int) -> list[str]:
    """`count` distinct solved blocks on the template's tip (hashlib; the chain is easy)."""
    from miner.mining.template import block_hex, job_from_template
    from miner.mining.work import Solution
    out = []
    for i in range(count):
        job = job_from_template(template, b"\x51", b"load %d" % i)
        work = job.work(0)
        nonce = next(n for n in range(1 << 20) if work.check(n))
        out.append(block_hex(Solution(job, 0, nonce)))
    return out


def run(clients: int, seconds: float, runs: int, blocks_per_client: int = 400) -> dict:
    from miner.chain.chain import Chain
    from miner.consensus.params import preset
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "load.sqlite"
        Chain.create(path, preset("regtest", int(time.time()) - 60)).close()
        node = subprocess.Popen([sys.executable, "-m", "miner", "node", "--chain", str(path), "--rpc-port", "0",
                                 "--backend", "ref", "--json"], stdout=subprocess.PIPE, text=True)
        try:
            ready = json.loads(node.stdout.readline())
            url = ready["url"] + "/"
            auth = "Basic " + base64.b64encode(Path(ready["cookie"]).read_text().encode()).decode()
            gbt = json.dumps({"method": "getblocktemplate", "params": [{"rules": ["segwit"]}], "id": 1})
            template = asyncio.run(_one(url, auth, gbt))
            results: dict[str, list[dict]] = {"getblocktemplate": [], "submitblock": []}
            for _ in range(runs):
                results["getblocktemplate"].append(asyncio.run(
                    _load(url, auth, clients, seconds, lambda k, i: gbt)))
                blocks = _sibling_blocks(template, clients * blocks_per_client)

                def submit(k: int, i: int, blocks: list[str] = blocks) -> str | None:
                    j = k * blocks_per_client + i
                    if i >= blocks_per_client:
                        return None
                    return json.dumps({"method": "submitblock", "params": [blocks[j]], "id": j})

                results["submitblock"].append(asyncio.run(_load(url, auth, clients, seconds, submit)))
                template = asyncio.run(_one(url, auth, gbt))  # a fresh tip for the next run's blocks
        finally:
            node.terminate()
            node.wait(30)
    summary = {}
    for method, rows in results.items():
        summary[method] = {key: statistics.median(r[key] for r in rows)
                           for key in ("per_second", "p50_ms", "p99_ms", "requests", "errors")}
    return {"clients": clients, "seconds": seconds, "runs": runs, "methods": summary}


async def _one(url: str, auth: str, body: str) -> dict:
    async with aiohttp.ClientSession(headers={"Authorization": auth}) as session, \
            session.post(url, data=body) as resp:
        return (await resp.json(content_type=None))["result"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m miner.bench.rpc_load", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.runs < 1:
        print("rpc_load: --clients and --runs must be at least 1 and --seconds positive", file=sys.stderr)
        return 2
    result = run(args.clients, args.seconds, args.runs)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.clients} clients, {args.runs} runs of {args.seconds:g} s, medians:")
    for method, r in result["methods"].items():
        print(f"  {method:<17} {r['per_second']:8.0f} req/s   p50 {r['p50_ms']:7.1f} ms   "
              f"p99 {r['p99_ms']:7.1f} ms   ({r['requests']:.0f} requests, {r['errors']:.0f} errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
