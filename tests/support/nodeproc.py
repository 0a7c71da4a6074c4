"""`miner node` as a real process on 127.0.0.1 for the tests: started on a free port, its event
lines read as they come, stopped with SIGTERM (or killed), never left behind."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from miner.chain.chain import Chain
from miner.consensus.params import REGTEST_BITS, ChainParams
from miner.primitives.compact import bits_to_target, target_to_bits

from . import ROOT, TESTS


def chain_params(hashes_per_block: int, genesis_time: int | None = None) -> ChainParams:
    """A chain whose blocks take about `hashes_per_block` hashes, with a difficulty that barely
    moves within a test (ASERT with a day's halflife)."""
    target = min((1 << 256) // hashes_per_block - 1, bits_to_target(REGTEST_BITS))
    return ChainParams(name="test-node", spacing=1, rule="asert", halflife=86_400,
                       genesis_bits=target_to_bits(target),
                       pow_limit_bits=REGTEST_BITS,
                       genesis_time=int(time.time()) - 60 if genesis_time is None else genesis_time)


def make_chain(path: Path, hashes_per_block: int = 2) -> Path:
    Chain.create(path, chain_params(hashes_per_block)).close()
    return path


_WITH_LIMIT = ("import os, resource, sys; n = int(sys.argv[1]); "
               "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])")


class NodeProcess:
    def __init__(self, chain: Path, *extra: str, backend: str = "ref", descriptors: int | None = None,
                 prefix: tuple[str, ...] = ()):
        """`prefix`: run the node under it (`ip netns exec NS`); calls then go through the same
        prefix, from inside."""
        self.chain = chain
        self.prefix = prefix
        # Where the node says it wrote its cookie once it is up; with user and password, where
        # its default cookie (NAME.cookie beside the chain NAME) would be: none must appear there.
        self.cookie = chain.with_name(chain.name + ".cookie")
        cmd = [sys.executable, "-m", "miner", "node", "--chain", str(chain), "--rpc-port", "0",
               "--backend", backend, "--json", *extra]
        if descriptors:  # a descriptor limit, as `prlimit --nofile` sets it, then the node in its place
            cmd = [sys.executable, "-c", _WITH_LIMIT, str(descriptors), *cmd]
        cmd = [*prefix, *cmd]
        # standard error is a pipe nobody reads until the node ends, as under a careless supervisor
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.events: list[dict] = []
        try:
            first = self.proc.stdout.readline()
            if not first:
                raise RuntimeError(f"node did not start: {self.proc.stderr.read()}")
            self.ready = json.loads(first)
        except BaseException:
            self.proc.kill()  # a node that did not come up is not left behind
            self.proc.wait()
            raise
        if self.ready.get("cookie"):
            self.cookie = Path(self.ready["cookie"])
        self.port = self.ready["port"]
        self.url = self.ready["url"]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def auth(self) -> str:
        return "Basic " + base64.b64encode(self.cookie.read_text().encode()).decode()

    def post(self, body: bytes | str, auth: str | None = None, method: str = "POST",
             timeout: float = 30) -> tuple[int, bytes, dict]:
        """(status, body, headers) of one raw HTTP request."""
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.url + "/", data=data if method == "POST" else None,
                                     method=method,
                                     headers={"Authorization": auth or self.auth(),
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def call(self, method: str, *params, timeout: float = 30):
        """A JSON-RPC 1.0 call: the result, or the error object (as a dict with 'error')."""
        if self.prefix:
            out = subprocess.run([*self.prefix, sys.executable, str(TESTS / "support" / "netns_rpc.py"), self.url,
                                  str(self.cookie), method, json.dumps(list(params))],
                                 capture_output=True, text=True, timeout=timeout + 10, check=True)
            reply = json.loads(out.stdout)
            return {"error": reply["error"]} if reply["error"] is not None else reply["result"]
        status, body, _ = self.post(json.dumps({"method": method, "params": list(params), "id": 1}),
                                    timeout=timeout)
        reply = json.loads(body)
        if reply["error"] is not None:
            return {"error": reply["error"], "status": status}
        return reply["result"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stored_blocks(path: Path) -> list[tuple[str, str]]:
    """(hash, status) of every stored block: what 'the chain file is unchanged' compares."""
    with Chain.open(path, readonly=True) as chain:
        rows = chain.store.conn.execute("SELECT hash, status FROM blocks ORDER BY seq").fetchall()
    return [(h.hex(), s) for h, s in rows]
