"""The node's Stratum, peer-to-peer and metrics faces under attack, for `node_abuse`: an honest
miner that submits a real share every 100 ms and times the answers, and the attacks of issue 33
on those faces, each bounded in count and time.

- stratum-idle: sockets that subscribe and authorize and then say nothing, more than the node
  keeps miners; at the end a new miner tries to authorize and a new peer to stay connected;
- peer-flood: peers that finish the handshake and then say nothing, more than the node keeps
  inbound peers; the same two probes at the end;
- names-1k, names-10k: 1,000 then 10,000 worker names authorized over connections of 64 names
  each and kept; scraped-1k, scraped-10k after each: three scrapers reading /metrics back to
  back, and one timed scrape on a fresh connection every 0.2 s;
- no-auth-upload: clients posting a 1 GB body without credentials as fast as the node takes it.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import time

from miner.bench.measure import percentiles

from miner.primitives import p2p


def chain_magic(path) -> bytes:
    """The peer-to-peer magic of the chain file at `path`, as the node derives it from genesis."""
    from miner.chain.chain import Chain
    with Chain.open(path, readonly=True) as chain:
        return chain.params.magic_bytes(chain.hash_at(0))


async def _miner_authorizes(port: int, worker: str) -> str:
    """What a new miner is told when it authorizes: 'ok', or the refusal."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return f"refused ({exc.strerror})"
    try:
        for rid, (method, params) in enumerate((("mining.subscribe", []), ("mining.authorize", [worker, "x"])), 1):
            writer.write(json.dumps({"id": rid, "method": method, "params": params}).encode() + b"\n")
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    return "closed"
                reply = json.loads(line)
                if reply.get("id") == rid:
                    break
        return "ok" if reply.get("result") is True else str(reply.get("error"))
    except (OSError, asyncio.TimeoutError, ValueError):
        return "closed"
    finally:
        writer.transport.abort()


async def _handshake(port: int, magic: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    version = p2p.Version(p2p.PROTOCOL_VERSION, p2p.OUR_SERVICES, int(time.time()), random.getrandbits(64),
                          "/abuse:1/", 0, relay=False)
    writer.write(p2p.frame(magic, "version", version.serialize()) + p2p.frame(magic, "verack"))
    seen = set()
    while not {"version", "verack"} <= seen:  # read until the node has said both
        head = await asyncio.wait_for(reader.readexactly(24), 10)
        _, name, length, _ = struct.unpack("<4s12sI4s", head)
        await reader.readexactly(length)
        seen.add(name.rstrip(b"\0").decode())
    return reader, writer


async def _drain_until_closed(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the node ends the connection within `seconds` (what it sends is read and dropped)."""
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            if not await asyncio.wait_for(reader.read(65536), max(0.01, end - time.monotonic())):
                return True
    except asyncio.TimeoutError:
        return False
    except OSError:
        return True
    return False


async def _peer_stays(port: int, magic: bytes) -> str:
    """'stays' when a new peer's connection outlives its handshake by a second, else how it ended."""
    try:
        reader, writer = await _handshake(port, magic)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
        return "refused"
    try:
        return "dropped after its handshake" if await _drain_until_closed(reader, 1.0) else "stays"
    finally:
        writer.transport.abort()


async def _probes(stratum_port: int, p2p_port: int, magic: bytes) -> dict:
    return {"new_miner": await _miner_authorizes(stratum_port, "probe.rig"),
            "new_peer": await _peer_stays(p2p_port, magic)}


async def stratum_idle(stratum_port: int, p2p_port: int, magic: bytes, count: int, seconds: float) -> dict:
    """`count` idle miners; after `seconds` (past the node's 30 s grace for newcomers, when that
    is what is measured) a new miner and a new peer try to get in."""
    gate = asyncio.Semaphore(50)
    held: list[asyncio.StreamWriter] = []
    answers: dict[str, int] = {}

    async def one(i: int) -> None:
        async with gate:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", stratum_port)
            except OSError:
                answers["refused"] = answers.get("refused", 0) + 1
                return
            held.append(writer)
            writer.write(b'{"id":1,"method":"mining.subscribe","params":[]}\n'
                         + json.dumps({"id": 2, "method": "mining.authorize",
                                       "params": [f"idle.{i}", "x"]}).encode() + b"\n")
            try:
                while (reply := json.loads(await asyncio.wait_for(reader.readline(), 10) or b"{}")).get("id") != 2:
                    if not reply:
                        raise ConnectionError
                key = "authorized" if reply.get("result") is True else "full"
            except (OSError, ValueError, asyncio.TimeoutError, ConnectionError):
                key = "closed"
            answers[key] = answers.get(key, 0) + 1
    await asyncio.gather(*(one(i) for i in range(count)))
    await asyncio.sleep(seconds)
    out = {**answers, **await _probes(stratum_port, p2p_port, magic)}
    for writer in held:
        writer.transport.abort()
    return out


async def peer_flood(stratum_port: int, p2p_port: int, magic: bytes, count: int, seconds: float) -> dict:
    gate = asyncio.Semaphore(50)
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def one() -> None:
        async with gate:
            try:
                held.append(await _handshake(p2p_port, magic))
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                pass
    await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.sleep(seconds)
    alive = sum(not r.at_eof() for r, _ in held)
    out = {"handshaken": len(held), "still_connected": alive, **await _probes(stratum_port, p2p_port, magic)}
    for _, writer in held:
        writer.transport.abort()
    return out


def authorize_names(stratum_port: int, names: int, held: list[socket.socket]) -> dict:
    """Made-up worker names, 64 on each new connection, until `names` are held (blocking sockets,
    kept open in `held` for the phases after this one)."""
    for c in range(len(held), (names + 63) // 64):
        sock = socket.create_connection(("127.0.0.1", stratum_port), timeout=30)
        held.append(sock)
        lines = [b'{"id":0,"method":"mining.subscribe","params":[]}'] + [
            json.dumps({"id": i + 1, "method": "mining.authorize", "params": [f"made.up{c}.{i}", "x"]}).encode()
            for i in range(64)]
        sock.sendall(b"\n".join(lines) + b"\n")
        reader = sock.makefile("rb")
        answered = 0
        while answered < len(lines):
            if json.loads(reader.readline()).get("id") is not None:
                answered += 1
    return {"names": 64 * len(held), "connections": len(held)}


async def scraped(metrics_url: str, scrapers: int, seconds: float) -> dict:
    """`scrapers` clients reading /metrics back to back, and one reading it on a fresh connection
    every 0.2 s whose answers are timed (what one scrape costs, the page's cache included)."""
    import aiohttp
    times: list[float] = []
    sizes: list[int] = []
    loads = [0]
    end = time.monotonic() + seconds

    async def hammer(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            async with session.get(metrics_url) as resp:
                sizes.append(len(await resp.read()))
            loads[0] += 1

    async def timed() -> None:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            async with aiohttp.ClientSession() as once, once.get(metrics_url) as resp:
                await resp.read()
            times.append(time.perf_counter() - t0)
            await asyncio.sleep(0.2)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(timed(), *(hammer(session) for _ in range(scrapers)))
    p50, p99 = percentiles(times)
    return {"scrapes": loads[0] + len(times), "timed_scrape_p50_ms": p50, "timed_scrape_p99_ms": p99,
            "page_bytes": max(sizes, default=0)}


async def no_auth_upload(rpc_port: int, clients: int, seconds: float) -> dict:
    """Each client posts a 1 GB body without credentials, as fast as its socket takes it, opening
    a new connection whenever the node ends one: connections held open and sending mean the node
    reads the body; many short ones mean it answered and closed (each took up to the sockets'
    buffers, a few MB on loopback, that the node never read)."""
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
    chunk = b"[" * 65536
    end = time.monotonic() + seconds
    taken = [0]
    connections = [0]

    async def one() -> None:
        while time.monotonic() < end:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", rpc_port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            connections[0] += 1
            try:
                writer.write(head)
                while time.monotonic() < end:
                    writer.write(chunk)
                    await asyncio.wait_for(writer.drain(), max(0.01, end - time.monotonic()))
                    taken[0] += len(chunk)
            except (OSError, asyncio.TimeoutError):
                pass
            finally:
                writer.transport.abort()
    await asyncio.gather(*(one() for _ in range(clients)))
    return {"connections": connections[0], "mb_sent": round(taken[0] / 1e6, 1)}
