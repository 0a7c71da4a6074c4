"""Recording TCP relays on 127.0.0.1, so a real exchange can be checked and kept as a fixture:
connections in, each forwarded to a server, bytes passed through unchanged, and every whole
message in either direction noted (who sent it, what it was). `RecordingProxy` cuts Bitcoin's
peer-to-peer messages (command, payload); `line_recorder.py` cuts Stratum's lines."""

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
        self.messages: list = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- what a message is

    def _frames(self, buf: bytes) -> tuple[list, bytes]:
        """The whole messages at the start of `buf`, and what is left: peer-to-peer framing."""
        frames = []
        while len(buf) >= 24:
            length = struct.unpack_from("<I", buf, 16)[0]
            if len(buf) < 24 + length:
                break
            frames.append((buf[4:16].rstrip(b"\0").decode("ascii", "replace"), buf[24:24 + length]))
            buf = buf[24 + length:]
        return frames, buf

    def _note(self, who: str, frame) -> None:
        command, payload = frame
        self.messages.append((who, command, payload))

    # ---------------------------------------------------------------- relaying

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                continue
            try:
                outbound = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                inbound.close()
                continue
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
                frames, buf = self._frames(buf + data)
                with self._lock:
                    for frame in frames:
                        self._note(who, frame)
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

    def __enter__(self) -> RecordingProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
