"""The node's guard on real sockets (127.0.0.1): who gets a connection, who is pushed out, when a
connection times out, and how fast one connection may call."""

from __future__ import annotations

import asyncio
import time

from miner.node.guard import Guard
from miner.node.limits import PEERS, RPC, STRATUM, GuardLimits


class _Recorder(asyncio.Protocol):
    """A face that only remembers its transport, as aiohttp's handler would."""

    def __init__(self, seen: list):
        self.seen = seen

    def connection_made(self, transport):
        self.seen.append(transport)

    def data_received(self, data):
        pass

    def connection_lost(self, exc):
        pass


async def _serve(guard: Guard, face: str = RPC):
    seen: list = []
    server = await asyncio.get_running_loop().create_server(
        guard.protocol_factory(lambda: _Recorder(seen), face), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def _connect(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.02)  # let the server admit it
    return reader, writer


async def _admitted(port: int, seen: list, guard: Guard):
    """A new connection and what the guard knows of it, once the server has taken it (or refused
    it: then None)."""
    before = len(seen)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(200):
        if len(seen) > before:
            return reader, writer, guard.connection(seen[before])
        await asyncio.sleep(0.01)
    return reader, writer, None


async def _closed_by_server(reader: asyncio.StreamReader, within: float = 2.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except ConnectionResetError:
        return True
    except asyncio.TimeoutError:
        return False


def run(coro):
    return asyncio.run(coro)


def test_the_cap_fits_the_descriptor_limit():
    assert Guard(GuardLimits(max_connections=256), descriptor_limit=200).limits.max_connections == 136
    assert Guard(GuardLimits(max_connections=256), descriptor_limit=100_000).limits.max_connections == 256
    small = Guard(GuardLimits(max_connections=256, reserved=32), descriptor_limit=80).limits
    assert small.max_connections == 16 and small.reserved == 2


def test_every_faces_budget_is_lowered_alike_to_fit_the_descriptor_limit_and_outbound_peers():
    asked = GuardLimits(max_connections=256, reserved=32, stratum_miners=256, inbound_peers=114,
                        outbound_peers=11, metrics_connections=16)
    assert Guard(asked, descriptor_limit=100_000).limits == asked  # room for all: as asked
    fitted = Guard(asked, descriptor_limit=400).limits
    slots = {face: b.slots for face, b in fitted.budgets().items()}
    assert sum(slots.values()) <= 400 - 64 - 11  # the outbound peers' descriptors are kept
    assert sum(slots.values()) > 0.9 * (400 - 64 - 11)  # and little more is lost
    assert slots[RPC] == fitted.max_connections and abs(fitted.max_connections / fitted.stratum_miners - 1) < 0.05
    assert fitted.inbound_peers < fitted.stratum_miners and fitted.metrics_connections >= 1


def test_a_new_anonymous_connection_pushes_out_the_oldest_silent_one():
    async def scenario():
        guard = Guard(GuardLimits(max_connections=6, reserved=2, header_timeout=30), descriptor_limit=10_000)
        server, port, _ = await _serve(guard)
        clients = [await _connect(port) for _ in range(4)]  # the anonymous share: 6 - 2
        assert guard.open_connections == 4 and guard.counts.evicted == 0
        clients[1][1].write(b"P")  # this one speaks; the others stay silent
        await asyncio.sleep(1.1)  # past the grace a new connection has to speak
        newcomer = await _connect(port)
        assert guard.counts.evicted == 1
        assert await _closed_by_server(clients[0][0])  # the oldest silent one
        assert not await _closed_by_server(clients[1][0], within=0.2)  # the one that spoke stays
        assert not await _closed_by_server(newcomer[0], within=0.2)
        server.close()
        await guard.close()
    run(scenario())


def test_settled_connections_leave_the_reserved_slots_to_clients_with_credentials():
    """Stratum miners prove nothing: a stranger who settles many connections may hold all but
    the reserved slots, never push out an authenticated client, and never keep a new one out."""
    async def scenario():
        guard = Guard(GuardLimits(max_connections=6, reserved=2, header_timeout=30), descriptor_limit=10_000)
        server, port, seen = await _serve(guard)
        settled = []
        for _ in range(4):
            settled.append(await _connect(port))
            assert guard.connection(seen[-1]).settle()
        loner = await _connect(port)
        assert not guard.connection(seen[-1]).settle()  # the fifth may not settle
        trusted = await _connect(port)
        guard.connection(seen[-1]).authenticate()  # the sixth slot: a client with credentials
        newcomer = await _connect(port)  # all slots taken: the one anonymous connection goes
        assert guard.counts.evicted == 1 and guard.counts.refused == 0
        guard.connection(seen[-1]).authenticate()
        assert await _closed_by_server(loner[0])
        for reader, _ in (*settled, trusted, newcomer):
            assert not await _closed_by_server(reader, within=0.1)
        stranger = await _connect(port)  # four settled, two authenticated: nobody to push out
        assert guard.counts.refused == 1
        assert await _closed_by_server(stranger[0])
        server.close()
        await guard.close()
    run(scenario())


def test_authenticated_connections_are_never_pushed_out_and_fill_the_reserved_slots():
    async def scenario():
        guard = Guard(GuardLimits(max_connections=4, reserved=1, header_timeout=30), descriptor_limit=10_000)
        server, port, seen = await _serve(guard)
        trusted = []
        for _ in range(4):
            trusted.append(await _connect(port))
            guard.connection(seen[-1]).authenticate()  # what the face does once credentials pass
        assert guard.open_connections == 4
        stranger = await _connect(port)  # every slot is held by an authenticated connection
        assert guard.counts.refused == 1 and guard.counts.evicted == 0
        assert await _closed_by_server(stranger[0])
        for reader, _ in trusted:
            assert not await _closed_by_server(reader, within=0.1)
        server.close()
        await guard.close()
    run(scenario())


def test_timeouts_follow_the_connections_state():
    async def scenario():
        guard = Guard(GuardLimits(max_connections=16, reserved=4, header_timeout=0.5, idle_timeout=1.5),
                      descriptor_limit=10_000)
        server, port, seen = await _serve(guard)
        silent = await _connect(port)
        trusted = await _connect(port)
        guard.connection(seen[-1]).authenticate()
        busy = await _connect(port)
        busy_conn = guard.connection(seen[-1])
        busy_conn.authenticate()
        busy_conn.begin()  # a long poll being handled: no timeout applies
        t0 = time.monotonic()
        assert await _closed_by_server(silent[0], within=3)
        assert time.monotonic() - t0 >= 0.4  # the anonymous connection's header time
        assert not await _closed_by_server(trusted[0], within=0.5)  # idle, but within its idle time
        assert await _closed_by_server(trusted[0], within=3)
        assert not await _closed_by_server(busy[0], within=0.5)
        busy_conn.end()
        assert await _closed_by_server(busy[0], within=3)  # idle from the end of its reply
        assert guard.counts.timed_out == 3
        server.close()
        await guard.close()
    run(scenario())


def test_a_connection_above_its_rate_waits_for_its_turn():
    """60 calls at 100 a second with a burst of 10: the 50 beyond the burst take half a second
    at least (a lower bound only: a loaded machine is slower, never faster)."""
    async def scenario():
        guard = Guard(GuardLimits(max_connections=16, reserved=4, rate=100.0, burst=10.0), descriptor_limit=10_000)
        server, port, seen = await _serve(guard)
        await _connect(port)
        conn = guard.connection(seen[-1])
        t0 = time.monotonic()
        for _ in range(60):
            await conn.throttle()
        elapsed = time.monotonic() - t0
        server.close()
        await guard.close()
        return elapsed
    assert run(scenario()) >= 0.45


def test_only_the_faces_served_have_a_budget():
    """A node without Stratum or peers keeps no slots (nor descriptors) for them; one that serves a
    face its limits left out gets that face's default budget."""
    from miner.node.limits import METRICS, OUTBOUND_PEERS, STRATUM_MINERS
    asked = GuardLimits(stratum_miners=40, inbound_peers=30)
    assert set(asked.serving(False, False, False, False).budgets()) == {RPC}
    rpc_and_outbound = asked.serving(False, False, True, False)
    assert set(rpc_and_outbound.budgets()) == {RPC} and rpc_and_outbound.outbound_peers == OUTBOUND_PEERS
    every = GuardLimits().serving(True, True, True, True)
    assert set(every.budgets()) == {RPC, STRATUM, PEERS, METRICS} and every.stratum_miners == STRATUM_MINERS
    assert asked.serving(True, True, False, False).stratum_miners == 40


def test_a_flood_on_one_face_never_takes_a_slot_of_another():
    """Stratum miners and inbound peers fill their own faces (and a stranger's sockets flood the
    Stratum port): the JSON-RPC face still has every slot, and each face refuses or evicts only
    its own connections."""
    async def scenario():
        guard = Guard(GuardLimits(max_connections=4, reserved=1, stratum_miners=3, inbound_peers=2,
                                  header_timeout=30), descriptor_limit=10_000)
        stratum, stratum_port, stratum_seen = await _serve(guard, STRATUM)
        peers, peers_port, peers_seen = await _serve(guard, PEERS)
        rpc, rpc_port, rpc_seen = await _serve(guard, RPC)
        miners = []
        for _ in range(3):
            *streams, conn = await _admitted(stratum_port, stratum_seen, guard)
            assert conn.settle()
            miners.append(streams)
        handshaken = []
        for _ in range(2):
            *streams, conn = await _admitted(peers_port, peers_seen, guard)
            assert conn.settle()
            handshaken.append(streams)
        flood = [await _connect(stratum_port) for _ in range(8)]  # far past the Stratum face's slots
        assert guard.face_counts(STRATUM).evicted > 0 and guard.face_counts(RPC).evicted == 0
        *late_peer, conn = await _admitted(peers_port, peers_seen, guard)
        assert not conn.settle()  # the peers' share is full, every peer within its grace
        assert guard.face_counts(PEERS).full == 1 and guard.face_counts(STRATUM).full == 0
        clients = []
        for _ in range(4):  # every JSON-RPC slot is still there
            *streams, conn = await _admitted(rpc_port, rpc_seen, guard)
            conn.authenticate()
            clients.append(streams)
        assert guard.face_counts(RPC).refused == 0 and guard.census()[RPC]["authenticated"] == 4
        for reader, _ in (*miners, *handshaken, *clients):
            assert not await _closed_by_server(reader, within=0.1)
        assert await _closed_by_server(flood[0][0])  # the flood pushed out its own
        for server in (stratum, peers, rpc):
            server.close()
        for _, writer in (*miners, *handshaken, *clients, *flood, late_peer):
            writer.close()
        await guard.close()
    run(scenario())


def test_a_full_face_pushes_out_its_least_productive_settled_connection():
    """As Core evicts an inbound peer: a handshake on a full face pushes out a settled connection
    that has done no work (the youngest of them), never one whose shares were accepted, never one
    still within its grace; with none left to push out, the handshake is refused."""
    async def scenario():
        guard = Guard(GuardLimits(stratum_miners=3, header_timeout=30, settle_grace=1.0), descriptor_limit=10_000)
        server, port, seen = await _serve(guard, STRATUM)
        settled = []
        for _ in range(3):
            *streams, conn = await _admitted(port, seen, guard)
            assert conn.settle()
            settled.append((streams, conn))
        (worker, worker_conn), (idle_old, _), (idle_young, _) = settled
        worker_conn.productive()  # the first has had a share accepted
        await asyncio.sleep(1.05)  # all past their grace
        *newcomer, conn = await _admitted(port, seen, guard)
        assert conn.settle()
        assert guard.face_counts(STRATUM).displaced == 1
        assert await _closed_by_server(idle_young[0])  # the youngest that did no work
        for reader, _ in (worker, idle_old, newcomer):
            assert not await _closed_by_server(reader, within=0.1)
        *second, conn = await _admitted(port, seen, guard)
        assert conn.settle()
        assert await _closed_by_server(idle_old[0])  # the newcomer is within its grace: the other idle one goes
        *third, conn = await _admitted(port, seen, guard)
        assert not conn.settle()  # a worker and two within their grace: full
        assert guard.face_counts(STRATUM).full == 1
        for reader, _ in (worker, newcomer, second):
            assert not await _closed_by_server(reader, within=0.1)
        server.close()
        for _, writer in (worker, idle_old, idle_young, newcomer, second, third):
            writer.close()
        await guard.close()
    run(scenario())
