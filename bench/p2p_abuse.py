"""Attacks on `miner node`'s peer-to-peer face: what an honest RPC client sees meanwhile, what the
node holds, and whether it keeps following its honest peer.

    python -m miner.bench.p2p_abuse [--before DIR] [--json]

A victim node on a regtest-core chain of 120 blocks (the last one about 1 MB) has an honest
node B, on the same chain, as its `--connect` peer; both run the code under test (and, with
`--before DIR`, the source tree in DIR after them, in the same run). While an honest client
calls the victim's `getblockcount` on a fresh connection every 100 ms (`node_abuse`'s watcher,
which also samples the victim's resident size), a stranger on 127.0.0.1 does, one after another:

- fake-20, fake-2000: a branch of that many free headers on the victim's tip (more work than
  B will have) and never the blocks; B then mines 9 blocks. Reported: whether (and how fast)
  the victim reached B's tip within 30 s, and whether the stranger was dropped, and banned
  when it came back and sent `notfound`;
- header-flood: up to 200,000 free headers, ignoring getdata and coming back when dropped, for
  30 s, while B mines a block every 10 s: the most headers held, B's disconnections, whether
  the victim followed B;
- unrequested: 100 blocks of about 1 MB on a fork from genesis, pushed unasked: blocks stored
  and the chain file's growth (with its WAL);
- unknown-commands: 8 peers sending 900 made-up command names a second each for 10 s: the
  size of `getpeerinfo`;
- partial: 100 peers each sending 3,999,000 bytes of a 4,000,000-byte message and stopping,
  held 15 s;
- getdata-repeats: one getdata naming the 1 MB block 50,000 times, read for 10 s: the bytes
  the victim sent and the CPU it spent.

Between attacks the victim's bans are cleared (`clearbanned`). Every attack is bounded in count
and time; every process is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

from miner.bench.honest import Phase, Watcher
from miner.bench.measure import percentiles, rss_kib
from miner.bench.p2p import ADDRESS, Node, big_block, build_victim_chain, fake_headers

from miner.consensus.params import preset
from miner.primitives import p2p

MAGIC = bytes.fromhex("fabfb5da")


class Wire:
    """The stranger's connection: handshake, send, and a reader that answers pings and keeps
    the getdata messages it is sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.getdata: list[bytes] = []
        self.received = 0
        self.closed = asyncio.Event()
        self.closed_at: float | None = None  # time.monotonic() when the connection ended
        self._task: asyncio.Task | None = None

    @classmethod
    async def open(cls, port: int, handshake: bool = True) -> Wire | None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, asyncio.TimeoutError):
            return None
        wire = cls(reader, writer)
        wire._task = asyncio.get_running_loop().create_task(wire._read())
        if handshake:
            version = p2p.Version(p2p.PROTOCOL_VERSION, p2p.NODE_NETWORK | p2p.NODE_WITNESS, int(time.time()),
                                  int.from_bytes(os.urandom(8), "little"), "/abuse:1/", 0)
            await wire.send("version", version.serialize())
            await wire.send("verack")
        return wire

    async def send(self, command: str, payload: bytes = b"") -> bool:
        return await self.send_raw(p2p.frame(MAGIC, command, payload))

    async def send_raw(self, data: bytes) -> bool:
        if self.closed.is_set():
            return False
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), 30)
            return True
        except (OSError, asyncio.TimeoutError):
            self.closed.set()
            return False

    async def _read(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(24)
                _, name, length, _ = struct.unpack("<4s12sI4s", head)
                payload = await self.reader.readexactly(length)
                self.received += 24 + length
                command = name.rstrip(b"\0").decode()
                if command == "ping":
                    await self.send("pong", payload)
                elif command == "getdata":
                    self.getdata.append(payload)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed_at = self.closed_at or time.monotonic()
            self.closed.set()

    def close(self) -> None:
        self.writer.transport.abort()
        if self._task is not None:
            self._task.cancel()


# --------------------------------------------------------------------------- the attacks

async def _until(check, within: float) -> float | None:
    """Seconds until `check()` held, or None when it did not within `within`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if check():
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    return None


def _disconnects(victim: Node, b: Node) -> int:
    addr = f"127.0.0.1:{b.ready['p2p_port']}"
    return sum(1 for e in victim.events if e.get("status") == "disconnected" and e.get("addr") == addr)


async def fake_branch(victim: Node, b: Node, messages: list[bytes]) -> dict:
    port = victim.ready["p2p_port"]
    wire = await Wire.open(port)
    for payload in messages:
        await wire.send("headers", payload)
    sent = time.monotonic()
    await asyncio.sleep(0.5)
    target = (await asyncio.to_thread(b.call, "generatetoaddress", 9, ADDRESS))[-1]
    followed = await _until(lambda: victim.call("getbestblockhash") == target, 30)
    await _until(wire.closed.is_set, 15)
    dropped = wire.closed_at - sent if wire.closed_at is not None else None
    wire.close()
    again = await Wire.open(port)
    banned = False
    if again is not None:
        for payload in messages:
            await again.send("headers", payload)
        asked = await _until(lambda: again.getdata or again.closed.is_set(), 5)
        if asked is not None and again.getdata:
            await again.send("notfound", again.getdata[0])
        await _until(again.closed.is_set, 12)
        again.close()
        banned = bool(victim.call("listbanned"))
    return {"followed_s": None if followed is None else round(followed, 2),
            "stranger_dropped_s": None if dropped is None else round(dropped, 1), "banned_on_return": banned}


async def header_flood(victim: Node, b: Node, messages: list[bytes], seconds: float = 30.0) -> dict:
    port = victim.ready["p2p_port"]
    before = _disconnects(victim, b)
    t0 = time.monotonic()
    sent = connections = 0
    held = 0
    mined: list[str] = []
    next_block = t0 + 10
    wire = None
    most = 0
    next_look = t0
    while time.monotonic() - t0 < seconds:
        if time.monotonic() >= next_look:  # the flood is one branch from genesis: its height is what is held
            most = max(most, (await asyncio.to_thread(victim.call, "getblockchaininfo"))["headers"])
            next_look += 1.0
        if time.monotonic() >= next_block:
            mined += await asyncio.to_thread(b.call, "generatetoaddress", 1, ADDRESS)
            next_block += 10
        if wire is None or wire.closed.is_set():
            if wire is not None:
                wire.close()
            wire = await Wire.open(port)
            connections += 1
            if wire is None or await _until(wire.closed.is_set, 0.3) is not None:
                break  # refused at once: banned
        if sent < len(messages):
            if await wire.send("headers", messages[sent]):
                sent += 1
        else:
            await asyncio.sleep(0.1)
    if wire is not None:
        wire.close()
    tips = victim.call("getchaintips")
    held = max((t["branchlen"] for t in tips if t["status"] == "headers-only"), default=0)
    followed = bool(mined) and await _until(lambda: victim.call("getbestblockhash") == mined[-1], 10) is not None
    return {"headers_sent": sent * p2p.MAX_HEADERS, "most_held": most, "held_at_end": held, "connections": connections,
            "banned": bool(victim.call("listbanned")), "b_disconnected": _disconnects(victim, b) - before,
            "followed_b": followed}


async def unrequested(victim: Node, folder: Path, count: int = 100) -> dict:
    size = sum(p.stat().st_size for p in folder.glob("chain.sqlite*"))
    stored = victim.call("getchaintips")
    wire = await Wire.open(victim.ready["p2p_port"])
    parent = preset("regtest-core", 0).genesis_header()
    for height in range(1, count + 1):
        block = big_block(parent, height, b"fork%d" % height)
        if not await wire.send("block", block.serialize()):
            break
        parent = block.header
    await wire.send("ping", p2p.ping_payload(1))
    await asyncio.sleep(2.0)
    wire.close()
    tips = victim.call("getchaintips")
    grown = sum(p.stat().st_size for p in folder.glob("chain.sqlite*")) - size
    fork = max((t["branchlen"] for t in tips if t["status"] == "valid-fork"), default=0)
    return {"blocks_pushed": count, "fork_blocks_stored": fork - max(
        (t["branchlen"] for t in stored if t["status"] == "valid-fork"), default=0),
            "disk_growth_mb": round(grown / 1e6, 1), "banned": bool(victim.call("listbanned"))}


async def unknown_commands(victim: Node, peers: int = 8, rate: int = 900, seconds: float = 10.0) -> dict:
    wires = [await Wire.open(victim.ready["p2p_port"]) for _ in range(peers)]

    async def one(k: int, wire: Wire) -> None:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < seconds and not wire.closed.is_set():
            batch = b"".join(p2p.frame(MAGIC, f"u{k}x{i + j:06d}", b"") for j in range(rate // 10))
            await wire.send_raw(batch)
            i += rate // 10
            await asyncio.sleep(0.1)
    await asyncio.gather(*(one(k, w) for k, w in enumerate(wires) if w is not None))
    info = victim.call("getpeerinfo")
    keys = max(len(p["bytesrecv_per_msg"]) for p in info)
    size = len(str(info))
    for w in wires:
        if w is not None:
            w.close()
    return {"names_sent": peers * rate * int(seconds), "getpeerinfo_bytes": size, "most_keys_per_peer": keys}


async def partial_messages(victim: Node, peers: int = 100, hold: float = 15.0) -> dict:
    frame = p2p.frame(MAGIC, "block", bytes(4_000_000))[:24 + 3_999_000]
    wires = []
    for _ in range(peers):
        wire = await Wire.open(victim.ready["p2p_port"])
        if wire is not None:
            wires.append(wire)
    await asyncio.gather(*(w.send_raw(frame) for w in wires))
    await asyncio.sleep(hold)
    dropped = sum(w.closed.is_set() for w in wires)
    for w in wires:
        w.close()
    return {"peers": len(wires), "dropped_by_node": dropped}


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def getdata_repeats(victim: Node, block: bytes, repeats: int = 50_000, seconds: float = 10.0) -> dict:
    cpu = _cpu_s(victim.proc.pid)
    wire = await Wire.open(victim.ready["p2p_port"])
    await wire.send("getdata", p2p.inv_payload([p2p.Inventory(p2p.MSG_WITNESS_BLOCK, block)] * repeats))
    await _until(wire.closed.is_set, seconds)
    wire.close()
    return {"bytes_sent_by_node_mb": round(wire.received / 1e6, 1),
            "node_cpu_s": round(_cpu_s(victim.proc.pid) - cpu, 2), "banned": bool(victim.call("listbanned"))}


# --------------------------------------------------------------------------- a run

def run_code(root: Path, seed: Path, big: bytes, code: Path | None, label: str, fakes: dict) -> dict:
    """Every attack against a fresh victim and B running `code`; the phases' figures."""
    folder_b, folder_v = root / f"{label}-b", root / f"{label}-victim"
    for folder in (folder_b, folder_v):
        folder.mkdir()
        shutil.copy(seed, folder / "chain.sqlite")
    b = Node(folder_b, code=code)
    victim = None
    watcher = None
    phases: list[Phase] = []
    try:
        victim = Node(folder_v, "--connect", b.target, code=code)
        auth = "Basic " + base64.b64encode((folder_v / ".cookie").read_bytes()).decode()
        watcher = Watcher(victim.ready["port"], auth, victim.proc.pid)
        asyncio.run(_until(lambda: victim.call("getconnectioncount") == 1, 10))
        attacks = [("idle", asyncio.sleep(2.0)),
                   ("fake-20", fake_branch(victim, b, fakes[20])),
                   ("fake-2000", fake_branch(victim, b, fakes[2000])),
                   ("header-flood", header_flood(victim, b, fakes[200_000])),
                   ("unrequested", unrequested(victim, folder_v)),
                   ("unknown-commands", unknown_commands(victim)),
                   ("partial", partial_messages(victim)),
                   ("getdata-repeats", getdata_repeats(victim, big))]
        for name, attack in attacks:
            watcher.phase = phase = Phase(name)
            phases.append(phase)
            phase.attack = asyncio.run(attack) or {}
            victim.call("clearbanned")
        rest = rss_kib(victim.proc.pid) / 1024
    finally:
        if watcher is not None:
            watcher.stop()
        for node in (victim, b):
            if node is not None:
                node.stop()
    return {"code": label, "rss_after_mib": round(rest, 1),
            "phases": [{"name": p.name, "calls": p.calls, "failed": p.failed,
                        "p50_ms": percentiles(p.rpc_latencies)[0] or 0.0,
                        "p99_ms": percentiles(p.rpc_latencies)[1] or 0.0,
                        "peak_rss_mib": round(p.peak_rss_mib, 1), "attack": p.attack} for p in phases]}


def bench_abuse(before: Path | None = None) -> dict:
    genesis = preset("regtest-core", 0).genesis_header()
    fakes = {200_000: fake_headers(200_000, genesis, b"flood")}
    with tempfile.TemporaryDirectory(prefix="p2p-abuse-") as tmp:
        root = Path(tmp)
        tip = build_victim_chain(root / "seed.sqlite")
        big = tip.hash()
        fakes.update({n: fake_headers(n, tip, b"fake%d" % n) for n in (20, 2000)})  # more work than ours
        runs = [run_code(root, root / "seed.sqlite", big, None, "after", fakes)]
        if before is not None:
            runs.append(run_code(root, root / "seed.sqlite", big, before, "before", fakes))
    return {"runs": runs}


def table(result: dict) -> str:
    lines = [f"{'code':<7} {'attack':<17} {'calls':>5} {'failed':>6} {'p50':>8} {'p99':>8} {'peak RSS':>9}  figures"]
    for run in result["runs"]:
        for ph in run["phases"]:
            lines.append(f"{run['code']:<7} {ph['name']:<17} {ph['calls']:>5} {ph['failed']:>6} {ph['p50_ms']:>6.1f}ms "
                         f"{ph['p99_ms']:>6.1f}ms {ph['peak_rss_mib']:>7.1f}M  {ph['attack']}")
        lines.append(f"{run['code']:<7} RSS after the attacks: {run['rss_after_mib']} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miner.bench.p2p_abuse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="also run the source tree in this folder, after this one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = bench_abuse(args.before)
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
