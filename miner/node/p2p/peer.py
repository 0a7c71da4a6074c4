"""One peer connection: framed messages in and out, the handshake's state, and what
`getpeerinfo` reports about it.

Reading is strict (`primitives.p2p`): another network's magic, a malformed command, a payload
over the size limit or a bad checksum ends the connection as misbehaviour; only a wrong magic
before the handshake ended is a plain goodbye (a BIP 324 peer's opening bytes look like that). A payload
is read a chunk at a time under the node's receive budget (`receive`). Every message read
costs a token from the peer's own bucket (the guard's rate and burst); a peer that outruns it
by a whole burst is flooding and is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from miner.node.p2p.receive import CHUNK, ReceiveBudget
from miner.primitives.p2p import (
    HEADER_LEN,
    Counters,
    Version,
    checksum,
    frame,
    parse_frame_header,
)
from miner.primitives.serialize import DecodeError

_ids = itertools.count()


class RecentSet:
    """The last `size` hashes added, for "the peer has this block" when relaying: a peer's
    inventory messages cannot grow it past its bound."""

    def __init__(self, size: int = 20_000):
        self.size = size
        self._items: OrderedDict[bytes, None] = OrderedDict()

    def add(self, item: bytes) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def update(self, items) -> None:
        for item in items:
            self.add(item)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)


class Misbehaving(Exception):
    """The peer broke the protocol: it is dropped, and banned unless the user asked for it."""


class PeerGone(Exception):
    """The connection ended (closed, reset, timed out)."""


@dataclass
class PeerStats:
    conntime: int = field(default_factory=lambda: int(time.time()))
    last_send: int = 0
    last_recv: int = 0
    sent: Counters = field(default_factory=Counters)
    received: Counters = field(default_factory=Counters)
    ping_nonce: int = 0
    ping_sent: float = 0.0
    ping_time: float | None = None
    min_ping: float | None = None


class Peer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, magic: bytes,
                 inbound: bool, manual: bool, rate: float, burst: float, write_timeout: float,
                 budget: ReceiveBudget | None = None):
        self.id = next(_ids)
        self.reader, self.writer, self.magic = reader, writer, magic
        self.inbound, self.manual = inbound, manual
        peer = writer.get_extra_info("peername") or ("?", 0)
        local = writer.get_extra_info("sockname") or ("?", 0)
        self.host, self.port = str(peer[0]), int(peer[1])
        self.local = f"{local[0]}:{local[1]}"
        self.version: Version | None = None
        self.verack = False  # theirs received
        self.send_headers = False  # they asked for headers announcements (BIP 130)
        self.known = RecentSet()  # blocks they have or we told them of (recent ones), for relay
        self.stats = PeerStats()
        self._rate, self._burst, self._tokens, self._refilled = rate, burst, burst, time.monotonic()
        self._write_timeout = write_timeout
        self._budget = budget if budget is not None else ReceiveBudget()
        self.closed = False

    @property
    def addr(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def ready(self) -> bool:
        return self.version is not None and self.verack

    # ------------------------------------------------------------------ the wire

    async def read(self) -> tuple[str, bytes]:
        """The next message, whole and checked; Misbehaving for a bad frame, PeerGone at the end
        (and once the connection is closed, whatever is left unread)."""
        if self.closed:
            raise PeerGone("closed")
        try:
            raw = await self.reader.readexactly(HEADER_LEN)
            if raw[:4] != self.magic and not self.ready:
                # Another network, or a BIP 324 (v2 transport) handshake: Core 26+ opens a
                # connection it was asked for with one and tries again in v1 when dropped, so
                # this is a plain goodbye, as Core's v1 transport answers a wrong magic.
                raise PeerGone("another network's magic (or a v2 transport handshake) before the handshake")
            try:
                head = parse_frame_header(raw, self.magic)
            except DecodeError as exc:
                raise Misbehaving(str(exc)) from None
            payload = await self._payload(head.command, head.length)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            raise PeerGone(type(exc).__name__) from None
        if checksum(payload) != head.checksum:
            raise Misbehaving(f"{head.command}: bad checksum")
        self._take_token(head.command)
        self.stats.last_recv = int(time.time())
        self.stats.received.add(head.command, HEADER_LEN + head.length)
        return head.command, payload

    async def _payload(self, command: str, length: int) -> bytes:
        """The payload, read a chunk at a time under the receive budget: it must keep the pace
        (`receive`: a timer, moved on at each chunk, closes the connection when it falls
        behind), and its bytes count with every other peer's incomplete message."""
        if not length:
            return b""
        budget = self._budget
        partial = budget.start(self.close, length)
        buf = bytearray()
        loop = asyncio.get_running_loop()
        late: list[bool] = []
        timer = None

        def too_slow() -> None:
            late.append(True)
            self.close()
        try:
            while len(buf) < length:
                timer = loop.call_later(max(0.0, budget.deadline(partial) - time.monotonic()), too_slow)
                chunk = await self.reader.read(min(CHUNK, length - len(buf)))
                timer.cancel()
                if late:
                    budget.slow += 1
                    raise PeerGone(f"{command} of {length} bytes too slow: {len(buf)} in "
                                   f"{time.monotonic() - partial.started:.1f} s")
                if not chunk or self.closed:
                    raise PeerGone("closed in the middle of a message")
                buf += chunk
                if not budget.grow(partial, len(chunk)):
                    raise PeerGone(f"{command}: {len(buf)} of {length} bytes, among the slowest when "
                                   f"incomplete messages filled the receive budget")
            return bytes(buf)
        finally:
            if timer is not None:
                timer.cancel()
            budget.finish(partial)
            # Given back now, not when the garbage collector breaks the cycle the exception's
            # traceback makes with asyncio's tasks (100 dropped peers held 87 MiB for a while).
            buf.clear()

    def _take_token(self, command: str) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        self._tokens -= 1
        if self._tokens < -self._burst:
            raise Misbehaving(f"message flood ({command}): over {self._rate:g} messages a second "
                              f"beyond a burst of {self._burst:g}")

    async def send(self, command: str, payload: bytes = b"") -> None:
        """One message; PeerGone when the peer does not take it within the write timeout."""
        if self.closed:
            raise PeerGone("closed")
        data = frame(self.magic, command, payload)
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self._write_timeout)
        except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
            self.close()
            raise PeerGone(type(exc).__name__) from None
        self.stats.last_send = int(time.time())
        self.stats.sent.add(command, len(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.transport.abort()

    # ------------------------------------------------------------------ getpeerinfo

    def info(self, synced_headers: int, synced_blocks: int, inflight: list[int]) -> dict:
        v = self.version
        s = self.stats
        return {
            "id": self.id, "addr": self.addr, "addrbind": self.local,
            "network": "ipv6" if ":" in self.host else "ipv4",
            "services": f"{v.services if v else 0:016x}", "relaytxes": bool(v and v.relay),
            "lastsend": s.last_send, "lastrecv": s.last_recv,
            "bytessent": s.sent.total, "bytesrecv": s.received.total, "conntime": s.conntime,
            "timeoffset": (v.timestamp - s.conntime) if v else 0,
            **({"pingtime": round(s.ping_time, 6)} if s.ping_time is not None else {}),
            **({"minping": round(s.min_ping, 6)} if s.min_ping is not None else {}),
            **({"pingwait": round(time.monotonic() - s.ping_sent, 6)} if s.ping_nonce else {}),
            "version": v.version if v else 0, "subver": v.user_agent if v else "",
            "inbound": self.inbound, "startingheight": v.start_height if v else -1,
            "synced_headers": synced_headers, "synced_blocks": synced_blocks,
            "inflight": inflight,
            "connection_type": "manual" if self.manual else ("inbound" if self.inbound else "outbound-full-relay"),
            "bytessent_per_msg": dict(s.sent.bytes), "bytesrecv_per_msg": dict(s.received.bytes),
        }
