"""The node's peer-to-peer face: connections to other nodes over Bitcoin's wire protocol,
headers-first sync from them, and relay of every new tip to them.

- **Connections.** Inbound ones come through the node's guard (its cap, its deadline for a
  silent or slow handshake); outbound ones are the user's (`--connect`, `addnode`) and are
  kept up with back-off. A banned address cannot connect in; a connection the user asked for
  is made all the same, as in Core.
- **Sync** (`sync`). After the handshake each peer is asked for headers from our locator;
  sync judges what peers send and returns decisions (`decisions`: ask for blocks or headers,
  drop, punish, store) that this manager carries out. It never touches a connection.
- **Relay** (`relay`). Every block that becomes our tip is announced once to each peer that
  does not have it; `serving` answers the peers' getheaders and getdata.
- **Misbehaviour.** A malformed or oversize message, bad proof of work, an invalid block,
  headers that do not link or keep failing to connect, or a flood ends the connection and bans
  the address (`bans`); the other peers go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from miner.consensus.params import ChainParams
from miner.errors import InvalidInput
from miner.node.guard import Guard
from miner.node.limits import PEERS
from miner.node.p2p.bans import BanList
from miner.node.p2p.decisions import AskBlocks, AskHeaders, Decision, Drop, Punish, StoreArrived
from miner.node.p2p.handshake import USER_AGENT as USER_AGENT  # getnetworkinfo's subversion reads it here
from miner.node.p2p.handshake import handshake, send_version
from miner.node.p2p.peer import Misbehaving, Peer, PeerGone
from miner.node.p2p.receive import ReceiveBudget, ReceiveLimits
from miner.node.p2p.relay import Relay
from miner.node.p2p.serving import serve_blocks, serve_headers
from miner.node.p2p.strikes import Strikes
from miner.node.p2p.sync import BlockSync, SyncLimits
from miner.node.service import NodeService
from miner.primitives import p2p
from miner.primitives.block import Block
from miner.primitives.serialize import DecodeError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 10.0
PING_INTERVAL = 60.0  # Core pings every 2 minutes
IDLE_TIMEOUT = 20 * 60.0  # Core's TIMEOUT_INTERVAL: nothing heard for this long ends a connection
RETRY_MIN, RETRY_MAX = 0.5, 30.0


@dataclass(frozen=True)
class PeerOptions:
    """`miner node --listen [HOST:]PORT --connect HOST:PORT ...`."""

    listen: tuple[str, int] | None = None
    connect: tuple[tuple[str, int], ...] = ()


@dataclass
class Target:
    """An outbound connection the user asked for, kept up by its task."""

    host: str
    port: int
    task: asyncio.Task | None = None
    peer: Peer | None = None
    removed: bool = False  # `addnode remove`: no reconnect after this connection ends


def parse_target(text: str, default_port: int = 18444) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise InvalidInput(f"{text!r} is not HOST:PORT")
    return host, int(port)


class PeerManager:
    def __init__(self, service: NodeService, guard: Guard, params: ChainParams, bans: BanList,
                 say: Callable[[dict, str], None] = lambda event, line: None,
                 limits: SyncLimits | None = None, receive: ReceiveLimits | None = None):
        self.service, self.guard, self.params, self.bans, self.say = service, guard, params, bans, say
        self.magic = b""
        self.nonce = random.getrandbits(64)  # a connection to ourselves shows our own nonce
        self.peers: dict[int, Peer] = {}
        self.targets: dict[str, Target] = {}
        self.sync = BlockSync(service, params, limits or SyncLimits())
        self.strikes = Strikes()
        self.receive = ReceiveBudget(receive or ReceiveLimits())  # every peer's incomplete messages
        self.relay = Relay(service, self.peers, self.sync.best_of, self._send_soon, self._spawn)
        self._storer: asyncio.Task | None = None
        self._handlers = {
            "ping": self._on_ping, "pong": self._on_pong, "sendheaders": self._on_sendheaders,
            "getheaders": self._on_getheaders, "getdata": self._on_getdata, "headers": self._on_headers,
            "inv": self._on_inv, "block": self._on_block, "notfound": self._on_notfound,
            "version": self._on_version,
            "sendcmpct": functools.partial(self._understood, parse=p2p.SendCmpct.parse),
            "feefilter": functools.partial(self._understood, parse=p2p.parse_feefilter),
        }
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.closing = False
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, listen: tuple[str, int] | None, connect: list[tuple[str, int]]) -> None:
        genesis = await self.service.on_chain(lambda c: c.hash_at(0))
        self.magic = self.params.magic_bytes(genesis)
        self.service.listeners.append(self.relay.on_accepted)
        if listen is not None:
            def factory() -> asyncio.Protocol:
                reader = asyncio.StreamReader()
                return asyncio.StreamReaderProtocol(reader, self._inbound)
            self._server = await self.guard.listen(factory, *listen, PEERS)
            self.port = self._server.sockets[0].getsockname()[1]
        for host, port in connect:
            self.add_target(host, port)
        self._spawn(self._housekeeping())

    async def close(self) -> None:
        self.closing = self.relay.closing = True
        if self._server is not None:
            self._server.close()
        for peer in list(self.peers.values()):
            peer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ connections

    def add_target(self, host: str, port: int, once: bool = False) -> Target:
        target = Target(host, port)
        if not once:
            self.targets[f"{host}:{port}"] = target
        target.task = self._spawn(self._keep_connected(target, once))
        return target

    def remove_target(self, key: str) -> bool:
        target = self.targets.pop(key, None)
        if target is None:
            return False
        target.removed = True  # as in Core, an open connection stays; it is just not made again
        if target.peer is None and target.task is not None:
            target.task.cancel()  # waiting to retry: stop now
        return True

    async def _keep_connected(self, target: Target, once: bool) -> None:
        delay = RETRY_MIN
        while not self.closing:
            started = time.monotonic()
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(target.host, target.port), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                log.info("peer %s:%d: cannot connect (%s)", target.host, target.port, exc)
            else:
                target.peer = self._new_peer(reader, writer, inbound=False, manual=True)
                await self._serve(target.peer)
                target.peer = None
            if once or self.closing or target.removed:
                return
            if time.monotonic() - started > 10:
                delay = RETRY_MIN  # it was up a while: the next failure starts the back-off again
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(RETRY_MAX, delay * 2)

    def _new_peer(self, reader, writer, inbound: bool, manual: bool) -> Peer:
        limits = self.guard.limits
        return Peer(reader, writer, self.magic, inbound, manual, limits.rate, limits.burst,
                    limits.write_timeout, self.receive)

    async def _inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.guard.connection(writer.transport)
        host = (writer.get_extra_info("peername") or ("?",))[0]
        if conn is None or self.closing or self.bans.is_banned(host):
            writer.transport.abort()
            return
        peer = self._new_peer(reader, writer, inbound=True, manual=False)
        await self._serve(peer, conn)

    async def _serve(self, peer: Peer, conn=None) -> None:
        self.peers[peer.id] = peer
        try:
            if not peer.inbound:
                await send_version(peer, self.nonce, self._height(), self.port or 0)
            await asyncio.wait_for(handshake(peer, self.nonce, self._height(), self.port or 0), HANDSHAKE_TIMEOUT)
            if conn is not None:
                if not conn.settle():
                    return  # every settled slot is taken: no room for another peer
                conn.begin()  # our own timeouts from here (pings, IDLE_TIMEOUT, stalls)
            self.say({"event": "peer", "status": "connected", "id": peer.id, "addr": peer.addr,
                      "inbound": peer.inbound, "subver": peer.version.user_agent},
                     f"peer {peer.id} {peer.addr} connected ({peer.version.user_agent})")
            await peer.send("sendheaders")
            self._carry_out(await self.sync.join(peer.id))
            while True:
                command, payload = await asyncio.wait_for(peer.read(), IDLE_TIMEOUT)
                delivered = self.sync.delivered(peer.id)
                await self._dispatch(peer, command, payload)
                if conn is not None and self.sync.delivered(peer.id) != delivered:
                    conn.productive()  # a block we asked for: kept longest when inbound slots run out
        except Misbehaving as exc:
            self._punish(peer, str(exc))
        except (PeerGone, asyncio.TimeoutError, ConnectionError, OSError):
            pass  # the connection ended: the peer left, was dropped, or timed out
        except Exception:  # a defect of ours must not end a --connect target's reconnect loop
            log.exception("peer %d %s: unexpected error; dropping the connection", peer.id, peer.addr)
        finally:
            peer.close()
            self.peers.pop(peer.id, None)
            moved = self.sync.leave(peer.id)
            if peer.ready:
                self.say({"event": "peer", "status": "disconnected", "id": peer.id, "addr": peer.addr},
                         f"peer {peer.id} {peer.addr} disconnected")
            if not self.closing:
                self._carry_out(moved)

    # ------------------------------------------------------------------ sync's decisions

    def _carry_out(self, decisions: list[Decision]) -> None:
        """Do what sync decided: the one place its decisions become messages, goodbyes and bans."""
        for d in decisions:
            if isinstance(d, StoreArrived):
                if not self.closing and (self._storer is None or self._storer.done()):
                    self._storer = self._spawn(self._store())
                continue
            peer = self.peers.get(d.peer)
            if peer is None or peer.closed:
                continue
            if isinstance(d, AskBlocks):
                items = [p2p.Inventory(p2p.MSG_WITNESS_BLOCK, h) for h in d.hashes]
                self._send_soon(peer, "getdata", p2p.inv_payload(items))
            elif isinstance(d, AskHeaders):
                self._send_soon(peer, "getheaders", p2p.GetHeaders(d.locator).serialize())
            elif isinstance(d, Punish):
                self._punish(peer, d.reason)
            elif isinstance(d, Drop):
                if d.stalled and self.strikes.add(peer.host, time.monotonic()):
                    self._punish(peer, f"{d.reason}, again (a repeat offender)")
                    continue
                self.say({"event": "peer", "status": "dropped", "id": peer.id, "addr": peer.addr,
                          "reason": d.reason}, f"peer {peer.id} {peer.addr} dropped: {d.reason}")
                peer.close()

    async def _store(self) -> None:
        """Store what peers delivered, batch after batch, while blocks keep arriving."""
        while self.sync.has_arrivals() and not self.closing:
            self._carry_out(await self.sync.store_batch())

    def _height(self) -> int:
        return self.service.tip.height if self.service.tip else 0

    def _send_soon(self, peer: Peer, command: str, payload: bytes) -> None:
        self._spawn(self._quiet_send(peer, command, payload))

    def _punish(self, peer: Peer, reason: str) -> None:
        banned = not peer.manual
        if banned:
            self.bans.ban(peer.host, reason=reason)
        self.say({"event": "peer", "status": "banned" if banned else "dropped", "id": peer.id,
                  "addr": peer.addr, "reason": reason},
                 f"peer {peer.id} {peer.addr} {'banned' if banned else 'dropped'}: {reason}")
        peer.close()

    def disconnect(self, match: Callable[[Peer], bool]) -> int:
        found = [p for p in self.peers.values() if match(p)]
        for p in found:
            p.close()
        return len(found)

    # ------------------------------------------------------------------ messages

    async def _dispatch(self, peer: Peer, command: str, payload: bytes) -> None:
        """One message after the handshake, to its handler; verack again, addr, addrv2, tx,
        getaddr, mempool and unknown commands are ignored."""
        handler = self._handlers.get(command)
        try:
            if command in p2p.EMPTY and payload:
                raise DecodeError(f"{command} with a payload")
            if handler is not None:
                await handler(peer, payload)
        except DecodeError as exc:
            raise Misbehaving(f"malformed {command}: {exc}") from None

    async def _on_ping(self, peer: Peer, payload: bytes) -> None:
        await peer.send("pong", p2p.ping_payload(p2p.parse_ping(payload)))

    async def _on_pong(self, peer: Peer, payload: bytes) -> None:
        nonce = p2p.parse_ping(payload)
        s = peer.stats
        if s.ping_nonce and nonce == s.ping_nonce:
            s.ping_time = time.monotonic() - s.ping_sent
            s.min_ping = min(s.ping_time, s.min_ping or s.ping_time)
            s.ping_nonce = 0

    async def _on_sendheaders(self, peer: Peer, payload: bytes) -> None:
        peer.send_headers = True

    async def _on_getheaders(self, peer: Peer, payload: bytes) -> None:
        await serve_headers(self.service, peer, p2p.GetHeaders.parse(payload))

    async def _on_getdata(self, peer: Peer, payload: bytes) -> None:
        await serve_blocks(self.service, peer, p2p.parse_inv(payload))

    async def _on_headers(self, peer: Peer, payload: bytes) -> None:
        headers = p2p.parse_headers(payload)
        peer.known.update(h.hash() for h in headers[-1:])  # for relay: they have it
        self._carry_out(await self.sync.on_headers(peer.id, headers))

    async def _on_inv(self, peer: Peer, payload: bytes) -> None:
        items = p2p.parse_inv(payload)
        peer.known.update(i.hash for i in items if i.is_block)
        self._carry_out(await self.sync.on_inv(peer.id, items))

    async def _on_block(self, peer: Peer, payload: bytes) -> None:
        block = Block.parse(payload)
        peer.known.add(block.hash)
        self._carry_out(await self.sync.on_block(peer.id, block))

    async def _on_notfound(self, peer: Peer, payload: bytes) -> None:
        self._carry_out(self.sync.on_notfound(peer.id, p2p.parse_inv(payload)))

    async def _on_version(self, peer: Peer, payload: bytes) -> None:
        raise Misbehaving("a second version message")

    @staticmethod
    async def _understood(peer: Peer, payload: bytes, parse=None) -> None:
        """Parsed (a malformed one is misbehaviour) and otherwise ignored: we announce by
        headers, not compact blocks, and relay no transactions to filter by fee."""
        parse(payload)

    async def _housekeeping(self) -> None:
        """Once a second: drop peers that stall a block, ping the quiet ones."""
        while not self.closing:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            self._carry_out(await self.sync.tick(now))
            for peer in list(self.peers.values()):
                if not peer.ready or peer.closed:
                    continue
                s = peer.stats
                if not s.ping_nonce and now - s.ping_sent > PING_INTERVAL:
                    s.ping_nonce, s.ping_sent = random.getrandbits(64) or 1, now
                    self._spawn(self._quiet_send(peer, "ping", p2p.ping_payload(s.ping_nonce)))
            self.bans.sweep()

    async def _quiet_send(self, peer: Peer, command: str, payload: bytes) -> None:
        with contextlib.suppress(PeerGone):
            await peer.send(command, payload)

    # ------------------------------------------------------------------ reports

    def peer_info(self) -> list[dict]:
        """getpeerinfo: peers past the handshake. synced_headers and synced_blocks are -1 until
        the peer has told us of a block, as in Core."""
        tip = self.service.tip.height if self.service.tip else 0
        rows = []
        for p in sorted(self.peers.values(), key=lambda p: p.id):
            if p.ready:
                best = self.sync.best_of(p.id)[1]
                rows.append(p.info(best, min(tip, best), self.sync.in_flight_heights(p.id)))
        return rows
