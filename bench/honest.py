"""The honest clients `node_abuse` times while the node is attacked, each in a thread of its own
so the attacker's event loop never delays them: a JSON-RPC caller that opens a fresh connection
every 100 ms, a sampler of the node's resident size, and a miner that submits a real share every
100 ms. What they see goes into the current `Phase`."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field

from miner.bench.measure import rss_kib
from miner.bench.stratum_load import _shares


@dataclass
class Phase:
    name: str
    calls: int = 0
    failed: int = 0
    worst_s: float = 0.0
    peak_rss_mib: float = 0.0
    attack: dict = field(default_factory=dict)
    rpc_latencies: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    cpu_s: float = 0.0  # the node's CPU time during the attack


class Watcher:
    """The honest client and the resident-size sampler, in threads of their own so an attacker's
    event loop never delays them."""

    def __init__(self, port: int, auth: str, pid: int):
        self.port, self.auth, self.pid = port, auth, pid
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
                conn.request("POST", "/", body, {"Authorization": self.auth})
                resp = conn.getresponse()
                ok = resp.status == 200 and json.loads(resp.read())["error"] is None
                conn.close()
            except (OSError, ValueError, http.client.HTTPException):
                pass
            elapsed = time.perf_counter() - t0
            phase.calls += 1
            phase.failed += not ok
            if ok:
                phase.rpc_latencies.append(elapsed)
            phase.worst_s = max(phase.worst_s, elapsed)
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


class HonestMiner:
    """A miner on a blocking socket in a thread of its own: subscribes and authorizes once, then
    submits one real share (found beforehand with hashlib) every 100 ms and times each answer
    into `sink` (a list the caller swaps per phase); a share not answered within 10 s is a failure."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.sock.makefile("rb")
        self.sink: list[float] = []
        self.failed = 0
        self._stop = threading.Event()
        self._next_id = 1
        subscribed = self._call("mining.subscribe", ["honest"])
        assert self._call("mining.authorize", ["load.miner", "x"])["result"] is True
        self.job: list | None = None
        while self.job is None:
            self._read()
        self.lines = _shares(self.job, subscribed["result"][1], subscribed["result"][2], 3000, 1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self) -> dict:
        line = self.reader.readline()
        if not line:
            raise ConnectionError("the node closed the honest miner's connection")
        msg = json.loads(line)
        if msg.get("method") == "mining.notify":
            self.job = msg["params"]
        return msg

    def _call(self, method: str, params: list) -> dict:
        rid, self._next_id = self._next_id, self._next_id + 1
        self.sock.sendall(json.dumps({"id": rid, "method": method, "params": params}).encode() + b"\n")
        while (msg := self._read()).get("id") != rid:
            pass
        return msg

    def _run(self) -> None:
        for line in self.lines:
            if self._stop.is_set():
                return
            sink = self.sink
            request = json.loads(line)
            t0 = time.perf_counter()
            try:
                ok = self._call("mining.submit", request["params"])["result"] is True
            except (OSError, ValueError, ConnectionError):
                self.failed += 1
                return
            sink.append(time.perf_counter() - t0)
            self.failed += not ok
            self._stop.wait(max(0.0, 0.1 - (time.perf_counter() - t0)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self.sock.close()
