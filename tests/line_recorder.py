"""A relay on 127.0.0.1 that records every line a Stratum miner and its pool send each other,
for the tests that run our client at pools nobody here wrote: the exchange is kept as a fixture
and replayed in every run. Bytes pass through unchanged; lines are cut at each newline."""

from __future__ import annotations

import socket
import threading
import time


class LineRecorder:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.lines: list[dict] = []  # {"from": "miner" | "pool", "line": str, "at": seconds from start}
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                miner, _ = self.listener.accept()
            except OSError:
                continue
            try:
                pool = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            except OSError:
                miner.close()
                continue
            pool.settimeout(None)
            self._sockets += [miner, pool]
            threading.Thread(target=self._pipe, args=(miner, pool, "miner"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(pool, miner, "pool"), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, who: str) -> None:
        buf = b""
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        with self._lock:
                            self.lines.append({"from": who, "line": line.decode(errors="replace"),
                                               "at": round(time.monotonic() - self._started, 3)})
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass
