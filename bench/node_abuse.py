"""Abuse of `miner node`: what an honest client sees while strangers attack, and what it costs.

    python -m miner.bench.node_abuse [--descriptors 1024] [--seconds 5] [--json]

Starts a node on a fresh easy chain (its own temporary folder, 127.0.0.1, a free port) under a
descriptor limit set as `prlimit` sets it, with its standard error going to a file. Then runs
the attacks below one after another, each bounded in count and time, while an honest client
opens a fresh connection every 100 ms and asks for the block count:

- silent: more sockets than the node has descriptors, opened and held without a byte;
- slowloris: connections sending a request header one byte every half second, reopened when dropped;
- bad-http: malformed requests (garbage request lines, bad versions, oversize headers);
- bad-auth: requests with wrong credentials, many at once;
- big-body: one authenticated batch as large as the node takes, then as many bytes of one
  JSON array of numbers;
- fuzz: random and mutated request bodies from an authenticated client.

Reported per attack: the honest calls, how many failed, the slowest answer; the node's largest
resident size during it; and at the end the bytes it wrote to standard error, its resident size
after a rest, and whether SIGTERM stopped it within a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


def rss_kib(pid: int) -> int:
    """A process's resident size in KiB, from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Phase:
    name: str
    calls: int = 0
    failed: int = 0
    worst_s: float = 0.0
    peak_rss_mib: float = 0.0
    attack: dict = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # every honest call's time, in s

    def percentile(self, q: float) -> float:
        """The honest calls' time at quantile q (0.5: median), in s; 0 without calls."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class _Watcher:
    """The honest client and the resident-size sampler, in threads of their own so an attacker's
    event loop never delays them."""

    def __init__(self, port: int, auth: str, pid: int, path: str = "/"):
        self.port, self.auth, self.pid, self.path = port, auth, pid, path
        self.phase = Phase("start")
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._honest, daemon=True),
                         threading.Thread(target=self._sample, daemon=True)]
        for t in self._threads:
            t.start()

    def _honest(self) -> None:
        body = json.dumps({"method": "getblockcount", "params": [], "id": 1})
        while not self._stop.is_set():
            phase = self.phase
            t0 = time.perf_counter()
            ok = False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("POST", self.path, body, {"Authorization": self.auth})
                resp = conn.getresponse()
                ok = resp.status == 200 and json.loads(resp.read())["error"] is None
                conn.close()
            except (OSError, ValueError, http.client.HTTPException):
                pass
            elapsed = time.perf_counter() - t0
            phase.calls += 1
            phase.failed += not ok
            phase.worst_s = max(phase.worst_s, elapsed)
            phase.latencies.append(elapsed)
            self._stop.wait(max(0.0, 0.1 - elapsed))

    def _sample(self) -> None:
        while not self._stop.is_set():
            phase = self.phase
            phase.peak_rss_mib = max(phase.peak_rss_mib, rss_kib(self.pid) / 1024)
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


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
        seed: int = 1) -> dict:
    from miner.chain.chain import Chain
    from miner.consensus.params import preset
    silent = descriptors + 100 if silent is None else silent
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "abuse.sqlite"
        Chain.create(path, preset("regtest", int(time.time()) - 60)).close()
        stderr_path = Path(tmp) / "stderr"

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))
        with open(stderr_path, "wb") as stderr:
            node = subprocess.Popen([sys.executable, "-m", "miner", "node", "--chain", str(path),
                                     "--rpc-port", "0", "--backend", "ref", "--json"],
                                    stdout=subprocess.PIPE, stderr=stderr, text=True,
                                    preexec_fn=limit)  # noqa: PLW1509 (no thread runs here yet)
        watcher = None
        phases: list[Phase] = []
        try:
            ready = json.loads(node.stdout.readline())
            port, url = ready["port"], ready["url"] + "/"
            auth = "Basic " + base64.b64encode((Path(tmp) / ".cookie").read_text().encode()).decode()
            watcher = _Watcher(port, auth, node.pid)

            def phase(name: str, attack) -> None:
                watcher.phase = p = Phase(name)
                phases.append(p)
                p.attack = asyncio.run(attack) if attack is not None else {}
            idle_rss = rss_kib(node.pid) / 1024
            phase("idle", asyncio.sleep(1.0))
            phase("silent", _silent(port, silent, seconds))
            phase("slowloris", _slowloris(port, slowloris, seconds))
            phase("bad-http", _bad_http(port, bad_http))
            phase("bad-auth", _bad_auth(url, bad_auth, seconds))
            if big_body:
                phase("big-body", _big_body(url, auth))
            phase("fuzz", _fuzz(url, auth, fuzz, seed))
            phase("rest", asyncio.sleep(2.0))
            rest_rss = rss_kib(node.pid) / 1024
        finally:
            if watcher is not None:
                watcher.stop()
            t0 = time.perf_counter()
            node.terminate()
            try:
                code = node.wait(10)
            except subprocess.TimeoutExpired:
                node.kill()
                code = node.wait()
            stop_s = time.perf_counter() - t0
        stderr_text = stderr_path.read_bytes()
    return {"descriptors": descriptors, "max_connections": ready.get("max_connections"),
            "idle_rss_mib": round(idle_rss, 1), "rest_rss_mib": round(rest_rss, 1),
            "peak_rss_mib": round(max(p.peak_rss_mib for p in phases), 1),
            "stderr_bytes": len(stderr_text), "stderr_lines": stderr_text.count(b"\n"),
            "traceback": b"Traceback" in stderr_text, "stop_seconds": round(stop_s, 2), "exit_code": code,
            "phases": [{"name": p.name, "calls": p.calls, "failed": p.failed, "worst_s": round(p.worst_s, 3),
                        "peak_rss_mib": round(p.peak_rss_mib, 1), "attack": p.attack} for p in phases]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m miner.bench.node_abuse", description=__doc__.splitlines()[0])
    p.add_argument("--descriptors", type=int, default=1024, help="the node's descriptor limit (default 1024)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the silent and slowloris attacks")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.descriptors < 64 or args.seconds <= 0:
        print("node_abuse: --descriptors must be at least 64 and --seconds positive", file=sys.stderr)
        return 2
    result = run(args.descriptors, args.seconds)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"node under a limit of {result['descriptors']} descriptors "
          f"(serving up to {result['max_connections']} connections)")
    print(f"{'attack':<10} {'honest calls':>12} {'failed':>6} {'slowest':>8} {'peak RSS':>9}  attack counts")
    for ph in result["phases"]:
        print(f"{ph['name']:<10} {ph['calls']:>12} {ph['failed']:>6} {ph['worst_s']:>7.2f}s "
              f"{ph['peak_rss_mib']:>7.1f}M  {json.dumps(ph['attack'])[:80]}")
    print(f"RSS idle {result['idle_rss_mib']} MiB, peak {result['peak_rss_mib']} MiB, after "
          f"{result['rest_rss_mib']} MiB; stderr {result['stderr_lines']} lines "
          f"({result['stderr_bytes']} bytes, traceback: {result['traceback']}); stopped by SIGTERM in "
          f"{result['stop_seconds']} s (exit {result['exit_code']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
