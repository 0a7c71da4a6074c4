"""A recording TCP proxy on 127.0.0.1 for peer-to-peer tests: one connection in, forwarded to a
peer, every whole message in either direction noted (who sent it, command, payload), so a real
exchange can be checked and kept as a fixture."""

from __future__ import annotations

import socket
import struct
import threading


class RecordingProxy:
    def __init__(self, upstream_port: int, names: tuple[str, str] = ("client", "server")):
        self.upstream = ("127.0.0.1", upstream_port)
        self.names = names  # who connects to the proxy, who it forwards to
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.messages: list[tuple[str, str, bytes]] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            inbound, _ = self.listener.accept()
        except OSError:
            return
        outbound = socket.create_connection(self.upstream, timeout=10)
        outbound.settimeout(None)
        self._sockets += [inbound, outbound]
        for src, dst, who in ((inbound, outbound, self.names[0]), (outbound, inbound, self.names[1])):
            threading.Thread(target=self._pipe, args=(src, dst, who), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, who: str) -> None:
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                buf += data
                while len(buf) >= 24:
                    length = struct.unpack_from("<I", buf, 16)[0]
                    if len(buf) < 24 + length:
                        break
                    command = buf[4:16].rstrip(b"\0").decode("ascii", "replace")
                    with self._lock:
                        self.messages.append((who, command, buf[24:24 + length]))
                    buf = buf[24 + length:]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for s in self._sockets:
            s.close()

    def __enter__(self) -> RecordingProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
