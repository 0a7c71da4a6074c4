"""A Stratum v1 miner as the tests play it: a raw socket speaking one JSON object a line, and the
header a miner hashes from mining.notify's fields, rebuilt with hashlib."""

from __future__ import annotations

import hashlib
import json
import socket
import time


def dsha(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


class Miner:
    """A Stratum client on a raw socket: one JSON object a line."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.notes: list[dict] = []
        self.next_id = 1

    def send_line(self, raw: bytes) -> None:
        self.sock.sendall(raw + b"\n")

    def read(self) -> dict | None:
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None  # dropped by the server
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, method: str, *params) -> dict:
        rid = self.next_id
        self.next_id += 1
        self.send_line(json.dumps({"id": rid, "method": method, "params": list(params)}).encode())
        return self.reply(rid)

    def reply(self, rid) -> dict:
        while True:
            msg = self.read()
            assert msg is not None, "connection closed"
            if msg.get("method"):
                self.notes.append(msg)
            elif msg.get("id") == rid:
                return msg

    def wait_for(self, method: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, n in enumerate(self.notes):
                if n["method"] == method:
                    return self.notes.pop(i)
            msg = self.read()
            assert msg is not None, "connection closed"
            if msg.get("method"):
                self.notes.append(msg)
        raise AssertionError(f"no {method} within {timeout} s")

    def start(self, worker: str = "alice.rig1") -> tuple[str, int, float, list]:
        sub = self.call("mining.subscribe", "test-miner/1.0")["result"]
        assert self.call("mining.authorize", worker, "x")["result"] is True
        difficulty = self.wait_for("mining.set_difficulty")["params"][0]
        job = self.wait_for("mining.notify")["params"]
        return sub[1], sub[2], difficulty, job

    def close(self) -> None:
        self.sock.close()


def build_header(job: list, extranonce1: str, extranonce2: bytes, ntime: int, nonce: int,
                 version: int | None = None) -> bytes:
    """The 80-byte header a Stratum miner hashes, from mining.notify's fields."""
    _, prevhash, coinb1, coinb2, branch, version_hex, nbits, _, _ = job
    coinbase = bytes.fromhex(coinb1) + bytes.fromhex(extranonce1) + extranonce2 + bytes.fromhex(coinb2)
    root = dsha(coinbase)
    for h in branch:
        root = dsha(root + bytes.fromhex(h))
    prev = b"".join(bytes.fromhex(prevhash)[i:i + 4][::-1] for i in range(0, 32, 4))
    v = int(version_hex, 16) if version is None else version
    return (v.to_bytes(4, "little") + prev + root + ntime.to_bytes(4, "little")
            + int(nbits, 16).to_bytes(4, "little") + nonce.to_bytes(4, "little"))
