"""One guard for every face of the node: connection caps, timeouts and rate limits.

A node serves strangers: anything that can reach its port can open connections and hold them.
The guard is the one place that decides who gets a connection and for how long, so the
JSON-RPC server, the Stratum server, the peer-to-peer listener and the metrics page cannot be
taken offline by a client that opens sockets and says nothing, sends its request a byte at a
time, or calls faster than the node can answer:

- **A budget per face** (`miner.node.limits`): JSON-RPC, Stratum miners, inbound peers and the
  metrics page each have their own slots, so a flood on one face never takes a slot of
  another, all of them lowered alike to fit the descriptor limit.
- **Inside a face**, connections are of three kinds: anonymous (nothing proven yet), settled (a
  handshake done but no credentials: a Stratum miner after authorize, a peer after verack) and
  authenticated (credentials checked: a JSON-RPC client). A newcomer beyond the face's anonymous
  share evicts an anonymous connection of the same face instead of being refused: the oldest
  that has sent nothing for a second, else the oldest. A flood of silent sockets or slow
  headers only ever pushes out its own older sockets; an honest client, which speaks as soon as
  it connects, gets in. Only when no anonymous connection of the face is left to push out is a
  newcomer refused.
- **Settled connections are weighed as Core weighs its inbound peers** before one is evicted:
  a handshake beyond the face's settled share pushes out the settled connection worth least,
  never an authenticated one, never one that settled within `settle_grace` (a newcomer has time
  to show its work), never one that was productive (an accepted share, a block it delivered)
  within `PRODUCTIVE_MEMORY`; of the rest, one productive longest ago goes before any that was,
  one never productive first, and among equals the youngest, so long-standing connections are
  the last to go. With nobody to push out the handshake is refused (Stratum's "Server full").
- **Timeouts by state**: an anonymous connection has `header_timeout` to complete an
  authenticated request; a request's first byte starts `header_timeout` for its header; an
  authenticated connection may sit idle `idle_timeout` between requests. A request being
  handled has no limit here (a long poll waits for minutes by design); reading its body and
  writing its reply have limits of their own, applied by the face.
- **A rate per connection**: a token bucket, `rate` calls a second with a `burst`; a caller
  above it waits for its token (its own connection slows, nobody else's).

The guard sees connections through a thin protocol wrapper (`protocol_factory`), so it works
with any asyncio protocol: aiohttp's HTTP handler, a Stratum line reader, a peer's stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from miner.node.limits import RPC, Budget, GuardLimits

log = logging.getLogger("miner.node.guard")

SWEEP_INTERVAL = 0.25  # s between timeout checks
SILENT_GRACE = 1.0  # s a new connection has to send its first byte before it is first in line for eviction
PRODUCTIVE_MEMORY = 3600.0  # s a share or a block keeps its connection out of reach of eviction
# The kernel's accept queue for every listening face, at the system's maximum as Bitcoin Core
# listens: while the loop is busy a burst of connections waits there to be accepted (and, past
# the cap, evicted) instead of having its SYNs dropped, which costs an honest client behind the
# burst TCP's retransmit delays (1 s, then 3 s).
LISTEN_BACKLOG = socket.SOMAXCONN
# Connections accepted per turn of the event loop (asyncio takes its backlog argument for this).
# An evicted connection's descriptor is freed on the loop's next turn, so one turn may hold this
# many beyond the cap: well inside the descriptors kept (`limits`), or accept() fails with EMFILE and asyncio
# stops accepting for a whole second.
ACCEPT_BATCH = 16

IDLE, HEADERS, BUSY = "idle", "headers", "busy"


class Connection:
    """What the guard knows of one connection."""

    __slots__ = (
        "_face",
        "_guard",
        "_refilled",
        "_tokens",
        "authenticated",
        "opened",
        "productive_at",
        "settled",
        "settled_at",
        "since",
        "state",
        "transport",
    )

    def __init__(self, guard: Guard, face: _Face, transport: asyncio.BaseTransport, now: float):
        self._guard = guard
        self._face = face
        self.transport = transport
        self.opened = now
        self.authenticated = False
        self.settled = False
        self.settled_at = 0.0
        self.productive_at: float | None = None  # the last accepted share or delivered block
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
        """The connection finished a handshake that proves nothing (Stratum's authorize, a peer's
        verack): it is no longer evicted as anonymous. When its face's settled share is full, the
        settled connection worth least is pushed out for it; False when none may be."""
        return self.authenticated or self.settled or self._guard.settle(self)

    def productive(self) -> None:
        """The connection did work for the node (a share accepted, a block delivered): it is
        kept longest when its face is full."""
        self.productive_at = time.monotonic()

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

    def __init__(self, guard: Guard, face: str, inner: asyncio.Protocol):
        self._guard = guard
        self._face = face
        self._inner = inner
        self._conn: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._conn = self._guard.admit(transport, self._face)
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
    refused: int = 0  # at connect: every slot of the face held by a settled or authenticated connection
    evicted: int = 0  # anonymous connections pushed out by newer ones
    timed_out: int = 0
    full: int = 0  # handshakes refused: the face's settled share held by connections worth keeping
    displaced: int = 0  # settled connections pushed out for a newer handshake

    def add(self, other: GuardCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Face:
    """One face's connections, apart from every other face's."""

    name: str
    budget: Budget
    counts: GuardCounts = field(default_factory=GuardCounts)
    silent: OrderedDict[int, Connection] = field(default_factory=OrderedDict)  # anonymous, no byte yet; oldest first
    speaking: OrderedDict[int, Connection] = field(default_factory=OrderedDict)  # anonymous, bytes received
    settled: dict[int, Connection] = field(default_factory=dict)
    open: int = 0

    @property
    def anonymous(self) -> int:
        return len(self.silent) + len(self.speaking)


class Guard:
    def __init__(self, limits: GuardLimits | None = None, descriptor_limit: int | None = None):
        if descriptor_limit is None:
            descriptor_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if descriptor_limit == resource.RLIM_INFINITY:
                descriptor_limit = 1 << 20
        self.limits = (limits or GuardLimits()).fitted(descriptor_limit)
        self._faces = {name: _Face(name, budget) for name, budget in self.limits.budgets().items()}
        self._by_transport: dict[Any, Connection] = {}
        self._sweeper: asyncio.Task | None = None

    # ------------------------------------------------------------------ admission

    def admit(self, transport: asyncio.BaseTransport, face: str = RPC) -> Connection | None:
        f = self._faces[face]
        if f.anonymous >= f.budget.anonymous or f.open >= f.budget.slots:
            if not f.anonymous:
                f.counts.refused += 1
                return None
            f.counts.evicted += 1
            self._drop(self._eviction_candidate(f))
        conn = Connection(self, f, transport, time.monotonic())
        self._by_transport[transport] = conn
        f.silent[id(conn)] = conn
        f.open += 1
        f.counts.admitted += 1
        return conn

    @staticmethod
    def _eviction_candidate(f: _Face) -> Connection:
        silent = next(iter(f.silent.values()), None)
        if silent is not None and time.monotonic() - silent.opened >= SILENT_GRACE:
            return silent
        speaking = next(iter(f.speaking.values()), None)
        if silent is None or (speaking is not None and speaking.opened < silent.opened):
            assert speaking is not None
            return speaking
        return silent

    def spoke(self, conn: Connection) -> None:
        f = conn._face
        if f.silent.pop(id(conn), None) is not None:
            f.speaking[id(conn)] = conn

    def settle(self, conn: Connection) -> bool:
        f = conn._face
        now = time.monotonic()
        if len(f.settled) >= f.budget.settled:
            victim = self._least_worth(f, now)
            if victim is None:
                f.counts.full += 1
                return False
            f.counts.displaced += 1
            log.warning("%s: the connection from %s pushed out for a newer one (all %d %s slots held, "
                        "it the least productive)", f.name, _address(victim.transport), len(f.settled), f.name)
            self._drop(victim)
        f.silent.pop(id(conn), None)
        f.speaking.pop(id(conn), None)
        f.settled[id(conn)] = conn
        conn.settled = True
        conn.settled_at = now
        return True

    def _least_worth(self, f: _Face, now: float) -> Connection | None:
        """The settled connection to push out, as Core picks an inbound peer to evict: none that
        settled within the grace or was productive within PRODUCTIVE_MEMORY; then one never
        productive, else productive longest ago; among those, the youngest."""
        grace = self.limits.settle_grace
        best: tuple[float, float] | None = None
        victim = None
        for conn in f.settled.values():
            if now - conn.settled_at < grace:
                continue
            productive = conn.productive_at
            if productive is not None and now - productive < PRODUCTIVE_MEMORY:
                continue
            key = (float("-inf") if productive is None else productive, -conn.settled_at)
            if best is None or key < best:
                best, victim = key, conn
        return victim

    def promote(self, conn: Connection) -> None:
        """Out of the anonymous queues and the settled set: authenticated."""
        f = conn._face
        f.silent.pop(id(conn), None)
        f.speaking.pop(id(conn), None)
        if f.settled.pop(id(conn), None) is not None:
            conn.settled = False

    def release(self, conn: Connection) -> None:
        if self._by_transport.pop(conn.transport, None) is not None:
            self.promote(conn)
            conn._face.open -= 1

    def _drop(self, conn: Connection) -> None:
        self.release(conn)
        conn.transport.abort()  # connection_lost follows; release is idempotent

    def connection(self, transport: Any) -> Connection | None:
        return self._by_transport.get(transport)

    @property
    def open_connections(self) -> int:
        return len(self._by_transport)

    @property
    def counts(self) -> GuardCounts:
        """Every face's counts together."""
        total = GuardCounts()
        for f in self._faces.values():
            total.add(f.counts)
        return total

    def face_counts(self, face: str) -> GuardCounts:
        return self._faces[face].counts

    def census(self) -> dict[str, dict[str, int]]:
        """Open connections by face and by what they proved: anonymous, settled (a Stratum miner,
        a peer), authenticated."""
        return {f.name: {"anonymous": f.anonymous, "settled": len(f.settled),
                         "authenticated": f.open - f.anonymous - len(f.settled)}
                for f in self._faces.values()}

    # ------------------------------------------------------------------ the face's side

    async def listen(self, inner: Callable[[], asyncio.Protocol], host: str, port: int,
                     face: str = RPC) -> asyncio.Server:
        """Serve `inner` on host:port through the guard, inside `face`'s budget: a deep accept
        queue in the kernel, a few accepts per turn of the loop (LISTEN_BACKLOG, ACCEPT_BATCH).
        OSError if it cannot bind."""
        server = await asyncio.get_running_loop().create_server(
            self.protocol_factory(inner, face), host, port, backlog=ACCEPT_BATCH, reuse_address=True)
        for listening in server.sockets:  # listen() again on a listening socket resizes its queue
            with socket.socket(fileno=os.dup(listening.fileno())) as same:
                same.listen(LISTEN_BACKLOG)
        return server

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol],
                         face: str = RPC) -> Callable[[], asyncio.Protocol]:
        """Wrap a server's protocol factory so every connection it serves goes through the guard,
        inside `face`'s budget (a face the limits do not serve is a mistake of the caller's)."""
        if face not in self._faces:
            raise ValueError(f"the guard has no budget for the {face} face")
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return lambda: _Guarded(self, face, inner())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            late = [c for c in self._by_transport.values()
                    if (d := c.deadline()) is not None and d <= now]
            for conn in late:
                conn._face.counts.timed_out += 1
                self._drop(conn)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
