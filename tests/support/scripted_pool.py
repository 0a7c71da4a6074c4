"""A Stratum pool on 127.0.0.1 that says what a test scripts, for the client's tests: it answers
the handshake with the values given, sends the notifications given, records every line a miner
sends, and can be told to send more at any time. Written from the protocol's conventions, not
from the client's code."""

from __future__ import annotations

import json
import socket
import threading
import time


class ScriptedPool:
    def __init__(self, extranonce1: str = "aabbccdd", extranonce2_size: int = 4,
                 version_mask: str | None = "1fffe000", authorize: bool = True,
                 on_connect: list[dict] | None = None, garbage: bytes | None = None):
        self.extranonce1 = extranonce1
        self.extranonce2_size = extranonce2_size
        self.version_mask = version_mask
        self.authorize = authorize
        self.on_connect = on_connect or []  # notifications sent right after authorize
        self.garbage = garbage  # sent instead of the subscribe reply, when given
        self.received: list[dict] = []
        self.connections = 0
        self.submits: list[list] = []
        self.submit_result = True
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def send(self, method: str, params: list, conn: socket.socket | None = None) -> None:
        """A notification to every connected miner (or one)."""
        line = json.dumps({"id": None, "method": method, "params": params}).encode() + b"\n"
        for c in [conn] if conn else list(self._conns):
            try:
                c.sendall(line)
            except OSError:
                pass

    def _reply(self, conn: socket.socket, rid, result=None, error=None) -> None:
        conn.sendall(json.dumps({"id": rid, "result": result, "error": error}).encode() + b"\n")

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    self.received.append(msg)
                    self._answer(conn, msg)
        except OSError:
            return
        finally:
            conn.close()
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)

    def _answer(self, conn: socket.socket, msg: dict) -> None:
        method, rid, params = msg.get("method"), msg.get("id"), msg.get("params")
        if method == "mining.configure":
            if self.version_mask is None:
                self._reply(conn, rid, error=[20, "Unknown method", None])
            else:
                self._reply(conn, rid, {"version-rolling": True, "version-rolling.mask": self.version_mask})
        elif method == "mining.subscribe":
            if self.garbage is not None:
                conn.sendall(self.garbage)
                return
            self._reply(conn, rid, [[["mining.notify", "1"]], self.extranonce1, self.extranonce2_size])
        elif method == "mining.authorize":
            if not self.authorize:
                self._reply(conn, rid, False, [24, "Unauthorized worker", None])
                return
            self._reply(conn, rid, True)
            for note in self.on_connect:
                self.send(note["method"], note["params"], conn)
        elif method == "mining.submit":
            self.submits.append(params)
            answer = self.submit_result
            if callable(answer):  # decided share by share: (result, error) or a whole reply
                answer = answer(params)
            if answer is True:
                self._reply(conn, rid, True)
            elif isinstance(answer, dict):  # a reply in a pool's own shape (ckpool's reject-reason)
                conn.sendall(json.dumps({"id": rid, **answer}).encode() + b"\n")
            else:
                self._reply(conn, rid, None, answer)
        elif rid is not None:
            self._reply(conn, rid, None, [20, "Unknown method", None])

    def wait(self, predicate, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "the pool did not see what the test waits for"
            time.sleep(0.02)

    def drop(self) -> None:
        """Hang up on every miner connected now; new connections are still taken."""
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self.drop()
