"""One guard for every face of the node: connection caps, timeouts and rate limits.

A node serves strangers: anything that can reach its port can open connections and hold them.
The guard is the one place that decides who gets a connection and for how long, so the
JSON-RPC server (and the Stratum and peer-to-peer faces after it) cannot be taken offline by
a client that opens sockets and says nothing, sends its request a byte at a time, or calls
faster than the node can answer:

- **A cap on connections**, lowered to what the process's descriptor limit allows (a node that
  runs out of descriptors can open neither its chain file nor new sockets). Connections are of
  three kinds: anonymous (nothing proven yet), settled (a handshake done but no credentials: a
  Stratum miner) and authenticated (credentials checked: a JSON-RPC client). Anonymous and
  settled connections may each hold all but `reserved` slots. A newcomer that would take more
  evicts an anonymous connection instead of being refused: the oldest that has sent nothing for
  a second, else the oldest. A flood of silent sockets or slow headers only ever pushes out its
  own older sockets, an honest client, which speaks as soon as it connects, gets in, and
  strangers who settle can never keep a client with credentials out. Only when no anonymous
  connection is left to push out is a newcomer refused.
- **Timeouts by state**: an anonymous connection has `header_timeout` to complete an
  authenticated request; a request's first byte starts `header_timeout` for its header; an
  authenticated connection may sit idle `idle_timeout` between requests. A request being
  handled has no limit here (a long poll waits for minutes by design); reading its body and
  writing its reply have limits of their own, applied by the face.
- **A rate per connection**: a token bucket, `rate` calls a second with a `burst`; a caller
  above it waits for its token (its own connection slows, nobody else's).

The guard sees connections through a thin protocol wrapper (`protocol_factory`), so it works
with any asyncio protocol: aiohttp's HTTP handler now, a Stratum line reader next.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DESCRIPTORS_KEPT = 64  # for the chain file, its WAL and SHM, the lock, logs, the kernel's needs
SWEEP_INTERVAL = 0.25  # s between timeout checks
SILENT_GRACE = 1.0  # s a new connection has to send its first byte before it is first in line for eviction
# The kernel's accept queue for every listening face, at the system's maximum as Bitcoin Core
# listens: while the loop is busy a burst of connections waits there to be accepted (and, past
# the cap, evicted) instead of having its SYNs dropped, which costs an honest client behind the
# burst TCP's retransmit delays (1 s, then 3 s).
LISTEN_BACKLOG = socket.SOMAXCONN
# Connections accepted per turn of the event loop (asyncio takes its backlog argument for this).
# An evicted connection's descriptor is freed on the loop's next turn, so one turn may hold this
# many beyond the cap: well inside DESCRIPTORS_KEPT, or accept() fails with EMFILE and asyncio
# stops accepting for a whole second.
ACCEPT_BATCH = 16


@dataclass(frozen=True)
class GuardLimits:
    max_connections: int = 256
    reserved: int = 32  # slots settled connections may not fill: kept for clients with credentials
    header_timeout: float = 10.0  # s: connect (or a request's first byte) to a complete request
    idle_timeout: float = 30.0  # s an authenticated connection may wait between requests (Core's rpcservertimeout)
    body_timeout: float = 60.0  # s to receive a request's body
    write_timeout: float = 30.0  # s to hand a reply to a client that reads
    rate: float = 1000.0  # calls per second per connection
    burst: float = 2000.0

    def fitted(self, descriptor_limit: int) -> GuardLimits:
        """The limits with the cap lowered to what `descriptor_limit` open files allow."""
        cap = min(self.max_connections, max(8, descriptor_limit - DESCRIPTORS_KEPT))
        reserved = self.reserved if cap == self.max_connections else \
            max(1, self.reserved * cap // self.max_connections)  # the same share of fewer slots
        return GuardLimits(cap, reserved, self.header_timeout, self.idle_timeout, self.body_timeout,
                           self.write_timeout, self.rate, self.burst)


IDLE, HEADERS, BUSY = "idle", "headers", "busy"


class Connection:
    """What the guard knows of one connection."""

    __slots__ = (
        "_guard",
        "_refilled",
        "_tokens",
        "authenticated",
        "opened",
        "settled",
        "since",
        "state",
        "transport",
    )

    def __init__(self, guard: Guard, transport: asyncio.BaseTransport, now: float):
        self._guard = guard
        self.transport = transport
        self.opened = now
        self.authenticated = False
        self.settled = False
        self.state = IDLE
        self.since = now
        self._tokens = guard.limits.burst
        self._refilled = now

    def authenticate(self) -> None:
        """The connection proved its credentials: it is never evicted and may idle longer."""
        if not self.authenticated:
            self._guard.promote(self)
            self.authenticated = True

    def settle(self) -> bool:
        """The connection finished a handshake that proves nothing (Stratum's authorize): it is no
        longer evicted, if a settled slot is free; False when none is."""
        return self.authenticated or self.settled or self._guard.settle(self)

    def begin(self) -> None:
        """A complete request arrived and is being handled: no timeout of the guard applies."""
        self.state = BUSY

    def end(self) -> None:
        """The reply is out: the connection waits for its next request."""
        self.state = IDLE
        self.since = time.monotonic()

    def received(self) -> None:
        if not (self.authenticated or self.settled):
            self._guard.spoke(self)
        if self.state == IDLE:
            self.state = HEADERS
            self.since = time.monotonic()

    async def throttle(self, cost: float = 1.0) -> None:
        """Wait until this connection may make `cost` more calls."""
        limits = self._guard.limits
        now = time.monotonic()
        self._tokens = min(limits.burst, self._tokens + (now - self._refilled) * limits.rate)
        self._refilled = now
        self._tokens -= cost
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / limits.rate)

    def deadline(self) -> float | None:
        limits = self._guard.limits
        if self.state == BUSY:
            return None
        if not (self.authenticated or self.settled):
            return self.opened + limits.header_timeout
        return self.since + (limits.idle_timeout if self.state == IDLE else limits.header_timeout)


class _Guarded(asyncio.Protocol):
    """Passes everything to the face's own protocol; tells the guard when a connection opens,
    receives bytes and closes."""

    def __init__(self, guard: Guard, inner: asyncio.Protocol):
        self._guard = guard
        self._inner = inner
        self._conn: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._conn = self._guard.admit(transport)
        if self._conn is None:
            transport.abort()
            return
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._conn is not None:
            self._conn.received()
            self._inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        if self._conn is not None:
            return self._inner.eof_received()  # type: ignore[attr-defined]
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._guard.release(self._conn)
            self._conn = None
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


@dataclass
class GuardCounts:
    admitted: int = 0
    refused: int = 0  # every slot held by a settled or authenticated connection
    evicted: int = 0  # anonymous connections pushed out by newer ones
    timed_out: int = 0


class Guard:
    def __init__(self, limits: GuardLimits = GuardLimits(), descriptor_limit: int | None = None):
        if descriptor_limit is None:
            descriptor_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if descriptor_limit == resource.RLIM_INFINITY:
                descriptor_limit = 1 << 20
        self.limits = limits.fitted(descriptor_limit)
        self.counts = GuardCounts()
        self._by_transport: dict[Any, Connection] = {}
        self._silent: OrderedDict[int, Connection] = OrderedDict()  # anonymous, no byte yet; oldest first
        self._speaking: OrderedDict[int, Connection] = OrderedDict()  # anonymous, bytes received
        self._settled = 0
        self._sweeper: asyncio.Task | None = None

    # ------------------------------------------------------------------ admission

    def admit(self, transport: asyncio.BaseTransport) -> Connection | None:
        limits = self.limits
        anonymous = len(self._silent) + len(self._speaking)
        if anonymous >= limits.max_connections - limits.reserved or \
                len(self._by_transport) >= limits.max_connections:
            if not anonymous:
                self.counts.refused += 1
                return None
            self.counts.evicted += 1
            self._drop(self._eviction_candidate())
        conn = Connection(self, transport, time.monotonic())
        self._by_transport[transport] = conn
        self._silent[id(conn)] = conn
        self.counts.admitted += 1
        return conn

    def _eviction_candidate(self) -> Connection:
        silent = next(iter(self._silent.values()), None)
        if silent is not None and time.monotonic() - silent.opened >= SILENT_GRACE:
            return silent
        speaking = next(iter(self._speaking.values()), None)
        if silent is None or (speaking is not None and speaking.opened < silent.opened):
            assert speaking is not None
            return speaking
        return silent

    def spoke(self, conn: Connection) -> None:
        if self._silent.pop(id(conn), None) is not None:
            self._speaking[id(conn)] = conn

    def settle(self, conn: Connection) -> bool:
        if self._settled >= self.limits.max_connections - self.limits.reserved:
            return False
        self._settled += 1
        conn.settled = True
        self._silent.pop(id(conn), None)
        self._speaking.pop(id(conn), None)
        return True

    def promote(self, conn: Connection) -> None:
        """Out of the anonymous queues (and out of the settled count, for one that was settled)."""
        self._silent.pop(id(conn), None)
        self._speaking.pop(id(conn), None)
        if conn.settled:
            conn.settled = False
            self._settled -= 1

    def release(self, conn: Connection) -> None:
        if self._by_transport.pop(conn.transport, None) is not None:
            self.promote(conn)

    def _drop(self, conn: Connection) -> None:
        self.release(conn)
        conn.transport.abort()  # connection_lost follows; release is idempotent

    def connection(self, transport: Any) -> Connection | None:
        return self._by_transport.get(transport)

    @property
    def open_connections(self) -> int:
        return len(self._by_transport)

    def census(self) -> dict[str, int]:
        """Open connections by what they proved: anonymous, settled (a Stratum miner),
        authenticated."""
        anonymous = len(self._silent) + len(self._speaking)
        return {"anonymous": anonymous, "settled": self._settled,
                "authenticated": len(self._by_transport) - anonymous - self._settled}

    # ------------------------------------------------------------------ the face's side

    async def listen(self, inner: Callable[[], asyncio.Protocol], host: str, port: int) -> asyncio.Server:
        """Serve `inner` on host:port through the guard: a deep accept queue in the kernel, a few
        accepts per turn of the loop (LISTEN_BACKLOG, ACCEPT_BATCH). OSError if it cannot bind."""
        server = await asyncio.get_running_loop().create_server(
            self.protocol_factory(inner), host, port, backlog=ACCEPT_BATCH, reuse_address=True)
        for listening in server.sockets:  # listen() again on a listening socket resizes its queue
            with socket.socket(fileno=os.dup(listening.fileno())) as same:
                same.listen(LISTEN_BACKLOG)
        return server

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wrap a server's protocol factory so every connection it serves goes through the guard."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return lambda: _Guarded(self, inner())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            late = [c for c in self._by_transport.values()
                    if (d := c.deadline()) is not None and d <= now]
            for conn in late:
                self.counts.timed_out += 1
                self._drop(conn)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
