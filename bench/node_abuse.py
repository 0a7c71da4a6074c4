"""Abuse of `miner node`: what an honest client sees while strangers attack, and what it costs.

    python -m miner.bench.node_abuse [--descriptors 1024] [--seconds 5] [--baseline DIR] [--rounds 1] [--json]

Starts a node on a fresh chain of the `local` preset (its own temporary folder, 127.0.0.1, free
ports for JSON-RPC, Stratum with the share difficulty pinned at 1e-9, peers and metrics) under
a descriptor limit set as `prlimit` sets it, with its standard error going to a file. Then runs
the attacks below one after another, each bounded in count and time, while an honest client
opens a fresh connection every 100 ms and asks for the block count, and an honest miner
connected from the start submits a real share every 100 ms (each answer timed):

- silent: more sockets than the node has descriptors, opened and held without a byte;
- slowloris: connections sending a request header one byte every half second, reopened when dropped;
- bad-http: malformed requests (garbage request lines, bad versions, oversize headers);
- bad-auth: requests with wrong credentials, many at once;
- big-body: one authenticated batch as large as the node takes, then as many bytes of one
  JSON array of numbers;
- fuzz: random and mutated request bodies from an authenticated client;
- stratum-idle, peer-flood, worker-names, no-auth-upload: the attacks on the other faces
  (`abuse_faces`), with a new miner and a new peer trying to get in at the end of the first two.

Reported per attack: the honest calls and shares, how many failed, their p50, p99 and slowest
answers; the node's largest resident size during it; and at the end the bytes it wrote to
standard error, its resident size after a rest, and whether SIGTERM stopped it within a few
seconds. `--baseline DIR` runs the same against the code checked out in DIR (another commit),
alternating with this checkout's, `--rounds` times each, in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from miner.bench import abuse_faces
from miner.bench.honest import HonestMiner, Phase, Watcher
from miner.bench.measure import cpu_seconds, percentiles, rss_kib


async def _silent(port: int, count: int, seconds: float) -> dict:
    writers, readers = [], []
    opened = 0
    for _ in range(count):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            writers.append(w)
            readers.append(r)
            opened += 1
        except (OSError, asyncio.TimeoutError):
            pass
    await asyncio.sleep(seconds)
    dropped = sum(r.at_eof() or r.exception() is not None for r in readers)
    for w in writers:
        w.transport.abort()
    return {"opened": opened, "dropped_by_node": dropped}


async def _slowloris(port: int, count: int, seconds: float) -> dict:
    header = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\nX-Pad: " + b"a" * 4000
    dropped = 0
    deadline = time.monotonic() + seconds

    async def one() -> None:
        nonlocal dropped
        while time.monotonic() < deadline:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            try:
                for byte in header:
                    if time.monotonic() >= deadline:
                        break
                    w.write(bytes([byte]))
                    await w.drain()
                    await asyncio.sleep(0.5)
                else:
                    continue
            except (OSError, ConnectionError):
                dropped += 1
            finally:
                w.transport.abort()
    await asyncio.gather(*(one() for _ in range(count)))
    return {"connections": count, "dropped_by_node": dropped}


BAD_REQUESTS = [b"GARBAGE\r\n\r\n", b"POST / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                b"POST / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 20000 + b"\r\n\r\n",
                b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                b"POST /\x00 HTTP/1.1\r\n\r\n", b"\r\n\r\n\r\n", b"POST / HTTP/1.1\r\nBad Header\r\n\r\n"]


async def _bad_http(port: int, count: int) -> dict:
    statuses: dict[str, int] = {}
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> None:
        async with sem:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(BAD_REQUESTS[i % len(BAD_REQUESTS)])
                await w.drain()
                line = await asyncio.wait_for(r.readline(), 15)
                key = line.split()[1].decode() if len(line.split()) > 1 else "closed"
                w.transport.abort()
            except (OSError, asyncio.TimeoutError, ConnectionError):
                key = "closed"
            statuses[key] = statuses.get(key, 0) + 1
    await asyncio.gather(*(one(i) for i in range(count)))
    return statuses


async def _bad_auth(url: str, count: int, seconds: float) -> dict:
    statuses: dict[str, int] = {}
    bad = "Basic " + base64.b64encode(b"__cookie__:wrong").decode()

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(url, data=b"{}", headers={"Authorization": bad}) as resp:
                key = str(resp.status)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            key = "timeout"
        statuses[key] = statuses.get(key, 0) + 1
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session:
        await asyncio.gather(*(one(session) for _ in range(count)))
    return statuses


async def _big_body(url: str, auth: str) -> dict:
    from miner.node.rpc.server import MAX_BODY as BIG_BODY  # bodies at the node's limit
    item = json.dumps({"method": "getblockcount", "params": ["x" * (BIG_BODY // 1000 - 100)], "id": 1})
    batch = ("[" + ",".join([item] * 1000) + "]").encode()
    numbers = b"[" + b"1," * (BIG_BODY // 2 - 2) + b"1]"
    out = {}
    async with aiohttp.ClientSession(headers={"Authorization": auth},
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        for name, body in (("batch", batch), ("numbers", numbers)):
            t0 = time.perf_counter()
            async with session.post(url, data=body) as resp:
                await resp.read()
                out[name] = {"status": resp.status, "seconds": round(time.perf_counter() - t0, 2)}
    return out


def _fuzz_bodies(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    valid = [json.dumps({"method": m, "params": p, "id": 1}).encode() for m, p in (
        ("getblockcount", []), ("getblock", ["00" * 32]), ("submitblock", ["00"]),
        ("getblocktemplate", [{"rules": ["segwit"]}]), ("getblockhash", [0]))]
    out = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(1, 400)))
        else:
            b = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 6)):
                pos = rng.randrange(len(b))
                b[pos:pos + 1] = rng.choice([b"", rng.randbytes(1), b"[" * 50, b"\"", b"{", b"-1e999", b"\\u0000"])
            out.append(bytes(b))
    return out


async def _fuzz(url: str, auth: str, count: int, seed: int) -> dict:
    statuses: dict[str, int] = {}
    bodies = _fuzz_bodies(count, seed)
    async with aiohttp.ClientSession(headers={"Authorization": auth},
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def worker(k: int) -> None:
            for body in bodies[k::8]:
                try:
                    async with session.post(url, data=body) as resp:
                        await resp.read()
                        key = str(resp.status)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    key = "error"
                statuses[key] = statuses.get(key, 0) + 1
        await asyncio.gather(*(worker(k) for k in range(8)))
    return statuses


def run(descriptors: int = 1024, seconds: float = 5.0, silent: int | None = None, slowloris: int = 300,
        bad_http: int = 500, bad_auth: int = 200, fuzz: int = 500, big_body: bool = True,
        seed: int = 1, faces: bool = True, code: Path | None = None) -> dict:
    """One round against this checkout's code, or the checkout at `code`; `faces` False leaves
    out the attacks on the Stratum, peer and metrics faces."""
    from miner.chain.chain import Chain
    from miner.consensus.params import preset
    silent = descriptors + 100 if silent is None else silent
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "abuse.sqlite"
        Chain.create(path, preset("local", int(time.time()) - 60)).close()
        magic = abuse_faces.chain_magic(path)
        stderr_path = Path(tmp) / "stderr"

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))
        pinned = [w for k in ("", "min-", "max-") for w in (f"--stratum-{k}difficulty", "1e-9")]
        env = {**os.environ, "PYTHONPATH": str(code)} if code is not None else None
        with open(stderr_path, "wb") as stderr:
            node = subprocess.Popen([sys.executable, "-m", "miner", "node", "--chain", str(path),
                                     "--rpc-port", "0", "--backend", "ref", "--json",
                                     *(["--stratum-port", "0", "--listen", "0", "--metrics-port", "0", *pinned]
                                       if faces else [])],
                                    stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=code, env=env,
                                    preexec_fn=limit)  # noqa: PLW1509 (no thread runs here yet)
        watcher = miner = None
        phases: list[Phase] = []
        try:
            ready = json.loads(node.stdout.readline())
            port, url = ready["port"], ready["url"] + "/"
            auth = "Basic " + base64.b64encode(Path(ready["cookie"]).read_text().encode()).decode()
            watcher = Watcher(port, auth, node.pid)
            if faces:
                miner = HonestMiner(ready["stratum_port"])
                stratum, peers = ready["stratum_port"], ready["p2p_port"]
                metrics = f"http://127.0.0.1:{ready['metrics_port']}/metrics"

            def phase(name: str, attack) -> None:
                watcher.phase = p = Phase(name)
                if miner is not None:
                    miner.sink = p.shares
                phases.append(p)
                cpu = cpu_seconds(node.pid)
                p.attack = asyncio.run(attack) if attack is not None else {}
                p.cpu_s = cpu_seconds(node.pid) - cpu
            idle_rss = rss_kib(node.pid) / 1024
            phase("idle", asyncio.sleep(1.0))
            phase("silent", _silent(port, silent, seconds))
            phase("slowloris", _slowloris(port, slowloris, seconds))
            phase("bad-http", _bad_http(port, bad_http))
            phase("bad-auth", _bad_auth(url, bad_auth, seconds))
            if big_body:
                phase("big-body", _big_body(url, auth))
            phase("fuzz", _fuzz(url, auth, fuzz, seed))
            if faces:  # the idle miners are held past the 30 s a newcomer is protected for
                phase("stratum-idle", abuse_faces.stratum_idle(stratum, peers, magic, 300, 31.0))
                phase("peer-flood", abuse_faces.peer_flood(stratum, peers, magic, 240, seconds))
                held: list = []
                for names, tag in ((1_000, "1k"), (10_000, "10k")):
                    phase(f"names-{tag}", asyncio.to_thread(abuse_faces.authorize_names, stratum, names, held))
                    phase(f"scraped-{tag}", abuse_faces.scraped(metrics, 3, seconds))
                for sock in held:
                    sock.close()
                phase("no-auth-upload", abuse_faces.no_auth_upload(port, 4, seconds))
            phase("rest", asyncio.sleep(2.0))
            rest_rss = rss_kib(node.pid) / 1024
        finally:
            if miner is not None:
                miner.stop()
            if watcher is not None:
                watcher.stop()
            t0 = time.perf_counter()
            node.terminate()
            try:
                exit_code = node.wait(10)
            except subprocess.TimeoutExpired:
                node.kill()
                exit_code = node.wait()
            stop_s = time.perf_counter() - t0
        stderr_text = stderr_path.read_bytes()
    return {"descriptors": descriptors, "max_connections": ready.get("max_connections"),
            "code": str(code) if code is not None else "this checkout",
            "idle_rss_mib": round(idle_rss, 1), "rest_rss_mib": round(rest_rss, 1),
            "peak_rss_mib": round(max(p.peak_rss_mib for p in phases), 1),
            "stderr_bytes": len(stderr_text), "stderr_lines": stderr_text.count(b"\n"),
            "traceback": b"Traceback" in stderr_text, "stop_seconds": round(stop_s, 2), "exit_code": exit_code,
            "honest_shares_failed": miner.failed if miner is not None else 0,
            "phases": [_report(p) for p in phases]}


def _report(p: Phase) -> dict:
    rpc_p50, rpc_p99 = percentiles(p.rpc_latencies)
    share_p50, share_p99 = percentiles(p.shares)
    return {"name": p.name, "calls": p.calls, "failed": p.failed, "worst_s": round(p.worst_s, 3),
            "rpc_p50_ms": rpc_p50, "rpc_p99_ms": rpc_p99, "shares": len(p.shares), "share_p50_ms": share_p50,
            "share_p99_ms": share_p99, "peak_rss_mib": round(p.peak_rss_mib, 1), "cpu_s": round(p.cpu_s, 2),
            "attack": p.attack}


def _print(result: dict) -> None:
    print(f"{result['code']}: a limit of {result['descriptors']} descriptors (JSON-RPC: up to "
          f"{result['max_connections']} connections)")
    print(f"{'attack':<15} {'calls':>5} {'failed':>6} {'rpc p50/p99 ms':>15} {'shares':>6} "
          f"{'share p50/p99 ms':>17} {'peak RSS':>9} {'CPU':>6}  attack")
    for ph in result["phases"]:
        print(f"{ph['name']:<15} {ph['calls']:>5} {ph['failed']:>6} {ph['rpc_p50_ms']!s:>7}/{ph['rpc_p99_ms']!s:<7} "
              f"{ph['shares']:>6} {ph['share_p50_ms']!s:>8}/{ph['share_p99_ms']!s:<8} {ph['peak_rss_mib']:>7.1f}M "
              f"{ph['cpu_s']:>5.2f}s  {json.dumps(ph['attack'])}")
    print(f"RSS idle {result['idle_rss_mib']} MiB, peak {result['peak_rss_mib']} MiB, after "
          f"{result['rest_rss_mib']} MiB; stderr {result['stderr_lines']} lines "
          f"({result['stderr_bytes']} bytes, traceback: {result['traceback']}); honest shares refused or lost: "
          f"{result['honest_shares_failed']}; stopped by SIGTERM in {result['stop_seconds']} s "
          f"(exit {result['exit_code']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m miner.bench.node_abuse", description=__doc__.splitlines()[0])
    p.add_argument("--descriptors", type=int, default=1024, help="the node's descriptor limit (default 1024)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each timed attack")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="also run the code checked out in DIR, alternating with this checkout's")
    p.add_argument("--rounds", type=int, default=1, help="rounds of each (default 1)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    wrong = "--descriptors must be at least 64, --seconds positive and --rounds at least 1" \
        if args.descriptors < 64 or args.seconds <= 0 or args.rounds < 1 else \
        f"--baseline {args.baseline} is not a checkout of this project" \
        if args.baseline is not None and not (args.baseline / "miner" / "__init__.py").is_file() else None
    if wrong:
        print(f"node_abuse: {wrong}", file=sys.stderr)
        return 2
    codes = [args.baseline.resolve(), None] if args.baseline is not None else [None]
    results = []
    for _ in range(args.rounds):
        for code in codes:
            results.append(run(args.descriptors, args.seconds, code=code))
            if not args.json:
                _print(results[-1])
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
