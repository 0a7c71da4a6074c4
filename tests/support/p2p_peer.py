"""A scripted peer for the tests: a plain blocking socket to a node on 127.0.0.1 that does the
handshake and then sends whatever the test wants, well-formed or not, and reads what comes
back. Written from the protocol's description (frame layout, version fields), sharing nothing
with the node's own peer code but the primitives' message encoders."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from miner.primitives import p2p

REGTEST_MAGIC = bytes.fromhex("fabfb5da")


class ScriptedPeer:
    def __init__(self, port: int, magic: bytes = REGTEST_MAGIC, timeout: float = 10.0):
        self.magic = magic
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ScriptedPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, command: str, payload: bytes = b"") -> None:
        self.send_raw(p2p.frame(self.magic, command, payload))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the node")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> tuple[str, bytes]:
        head = self._read(24)
        magic, name, length, _ = struct.unpack("<4s12sI4s", head)
        assert magic == self.magic
        return name.rstrip(b"\0").decode(), self._read(length)

    def expect(self, command: str, within: float = 10.0) -> bytes:
        """The payload of the next `command`, skipping others (pings are answered)."""
        end = time.monotonic() + within
        while time.monotonic() < end:
            got, payload = self.recv()
            if got == "ping":
                self.send("pong", payload)
            if got == command:
                return payload
        raise TimeoutError(command)

    def handshake(self, start_height: int = 0) -> p2p.Version:
        ours = p2p.Version(p2p.PROTOCOL_VERSION, p2p.NODE_NETWORK | p2p.NODE_WITNESS, int(time.time()),
                           0x5EED, "/scripted-peer:1/", start_height, relay=False)
        self.send("version", ours.serialize())
        theirs = None
        got_verack = False
        while theirs is None or not got_verack:
            command, payload = self.recv()
            if command == "version":
                theirs = p2p.Version.parse(payload)
                self.send("verack")
            elif command == "verack":
                got_verack = True
        return theirs

    def closed_by_node(self, within: float = 10.0) -> bool:
        """Whether the node ends the connection within `within` seconds (reading and dropping
        anything it sends meanwhile)."""
        self.sock.settimeout(0.5)
        end = time.monotonic() + within
        while time.monotonic() < end:
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                continue
            except ConnectionError:
                return True
        return False


class AsyncPeer:
    """The scripted peer for in-process tests: the same conversation on asyncio streams, so it
    shares the test's event loop with a node running there (a blocking socket would stop it)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, magic: bytes):
        self.reader, self.writer, self.magic = reader, writer, magic
        self.received: list[str] = []  # every command read, in order

    @classmethod
    async def connect(cls, port: int, magic: bytes = REGTEST_MAGIC) -> AsyncPeer:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        return cls(reader, writer, magic)

    def close(self) -> None:
        self.writer.transport.abort()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), 10)

    async def send(self, command: str, payload: bytes = b"") -> None:
        await self.send_raw(p2p.frame(self.magic, command, payload))

    async def recv(self, within: float = 10.0) -> tuple[str, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(24), within)
        magic, name, length, _ = struct.unpack("<4s12sI4s", head)
        assert magic == self.magic
        payload = await asyncio.wait_for(self.reader.readexactly(length), within)
        command = name.rstrip(b"\0").decode()
        self.received.append(command)
        return command, payload

    async def expect(self, command: str, within: float = 10.0) -> bytes:
        """The payload of the next `command`, skipping others (pings are answered)."""
        end = time.monotonic() + within
        while (left := end - time.monotonic()) > 0:
            got, payload = await self.recv(left)
            if got == "ping":
                await self.send("pong", payload)
            if got == command:
                return payload
        raise TimeoutError(command)

    async def handshake(self, start_height: int = 0) -> p2p.Version:
        ours = p2p.Version(p2p.PROTOCOL_VERSION, p2p.NODE_NETWORK | p2p.NODE_WITNESS, int(time.time()),
                           0xA5EED, "/scripted-peer:1/", start_height, relay=False)
        await self.send("version", ours.serialize())
        theirs = None
        got_verack = False
        while theirs is None or not got_verack:
            command, payload = await self.recv()
            if command == "version":
                theirs = p2p.Version.parse(payload)
                await self.send("verack")
            elif command == "verack":
                got_verack = True
        return theirs

    async def closed_by_node(self, within: float = 10.0) -> bool:
        """Whether the node ends the connection within `within` seconds (reading and dropping
        anything it sends meanwhile)."""
        end = time.monotonic() + within
        while (left := end - time.monotonic()) > 0:
            try:
                if not await asyncio.wait_for(self.reader.read(65536), min(left, 0.5)):
                    return True
            except asyncio.TimeoutError:
                continue
            except (ConnectionError, OSError):
                return True
        return False
