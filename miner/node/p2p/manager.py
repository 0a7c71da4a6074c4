"""The node's peer-to-peer face: connections to other nodes over Bitcoin's wire protocol,
headers-first sync from them, and relay of every new tip to them.

- **Connections.** Inbound ones come through the node's guard (its cap, its deadline for a
  silent or slow handshake); outbound ones are the user's (`--connect`, `addnode`) and are
  kept up with back-off. A banned address cannot connect in; a connection the user asked for
  is made all the same, as in Core.
- **Sync.** After the handshake each peer is asked for headers from our locator. Headers are
  checked on their own (linked, proof of work) and held (`headers.HeaderTree`); the blocks on
  the way to the most-work header are then fetched from the peers that have them, at most
  `MAX_IN_FLIGHT` per peer, and a peer that keeps a block past `STALL_TIMEOUT` is dropped and
  its blocks asked of others. Blocks that arrive before their parent wait (bounded) for it.
- **Relay.** Every block that becomes our tip is announced once to each peer that does not
  have it: a `headers` message to a peer that sent `sendheaders`, an `inv` to the others.
- **Misbehaviour.** A malformed or oversize message, bad proof of work, an invalid block,
  headers that do not link or keep failing to connect, or a flood ends the connection and bans
  the address (`bans`); the other peers go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from miner.chain.chain import Chain
from miner.chain.locator import header_of, headers_after
from miner.consensus.params import ChainParams
from miner.errors import InvalidInput
from miner.node.guard import Guard
from miner.node.p2p.bans import BanList
from miner.node.p2p.peer import Misbehaving, Peer, PeerGone
from miner.node.p2p.sync import BlockSync
from miner.node.service import Accepted, NodeService
from miner.primitives import p2p
from miner.primitives.block import Block
from miner.primitives.header import BlockHeader
from miner.primitives.serialize import DecodeError, varint
from miner.primitives.transaction import strip_witness

log = logging.getLogger(__name__)

USER_AGENT = "/pow-miner:0.1.0/"
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
                 say: Callable[[dict, str], None] = lambda event, line: None):
        self.service, self.guard, self.params, self.bans, self.say = service, guard, params, bans, say
        self.magic = b""
        self.nonce = random.getrandbits(64)  # a connection to ourselves shows our own nonce
        self.peers: dict[int, Peer] = {}
        self.targets: dict[str, Target] = {}
        self.sync = BlockSync(service, params, self.peers, self._spawn, self._punish)
        self._to_announce: bytes | None = None
        self._announcer: asyncio.Task | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.closing = False
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, listen: tuple[str, int] | None, connect: list[tuple[str, int]]) -> None:
        genesis = await self.service.on_chain(lambda c: c.tree.active[0])
        self.magic = self.params.magic_bytes(genesis)
        self.service.listeners.append(self._on_accepted)
        if listen is not None:
            def factory() -> asyncio.Protocol:
                reader = asyncio.StreamReader()
                return asyncio.StreamReaderProtocol(reader, self._inbound)
            self._server = await self.guard.listen(factory, *listen)
            self.port = self._server.sockets[0].getsockname()[1]
        for host, port in connect:
            self.add_target(host, port)
        self._spawn(self._housekeeping())

    async def close(self) -> None:
        self.closing = True
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
                    limits.write_timeout)

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
                await self._send_version(peer)
            await asyncio.wait_for(self._handshake(peer), HANDSHAKE_TIMEOUT)
            if conn is not None:
                if not conn.settle():
                    return  # every settled slot is taken: no room for another peer
                conn.begin()  # our own timeouts from here (pings, IDLE_TIMEOUT, stalls)
            self.say({"event": "peer", "status": "connected", "id": peer.id, "addr": peer.addr,
                      "inbound": peer.inbound, "subver": peer.version.user_agent},
                     f"peer {peer.id} {peer.addr} connected ({peer.version.user_agent})")
            await peer.send("sendheaders")
            await self.sync.ask_headers(peer)
            while True:
                command, payload = await asyncio.wait_for(peer.read(), IDLE_TIMEOUT)
                await self._dispatch(peer, command, payload)
        except Misbehaving as exc:
            self._punish(peer, str(exc))
        except (PeerGone, asyncio.TimeoutError, ConnectionError, OSError):
            pass  # the connection ended: an ordinary goodbye (before the catch-all, or it is logged as a defect)
        except Exception:  # a defect of ours must not end a --connect target's reconnect loop
            log.exception("peer %d %s: unexpected error; dropping the connection", peer.id, peer.addr)
        finally:
            peer.close()
            self.peers.pop(peer.id, None)
            self.sync.release(peer)
            if peer.ready:
                self.say({"event": "peer", "status": "disconnected", "id": peer.id, "addr": peer.addr},
                         f"peer {peer.id} {peer.addr} disconnected")
            if not self.closing:
                self.sync.schedule()

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

    async def _send_version(self, peer: Peer) -> None:
        height = self.service.tip.height if self.service.tip else 0
        version = p2p.Version(p2p.PROTOCOL_VERSION, p2p.OUR_SERVICES, int(time.time()), self.nonce,
                              USER_AGENT, height, relay=False, port=self.port or 0)
        await peer.send("version", version.serialize())

    async def _handshake(self, peer: Peer) -> None:
        while not peer.ready:
            command, payload = await peer.read()
            if command == "version":
                if peer.version is not None:
                    raise Misbehaving("a second version message")
                try:
                    version = p2p.Version.parse(payload)
                except DecodeError as exc:
                    raise Misbehaving(f"malformed version: {exc}") from None
                if version.nonce == self.nonce:
                    raise PeerGone("connected to ourselves")
                if version.version < p2p.MIN_PEER_VERSION:
                    raise PeerGone(f"protocol version {version.version} is too old")
                peer.version = version
                if peer.inbound:
                    await self._send_version(peer)
                await peer.send("verack")
            elif command == "verack" and peer.version is not None:
                peer.verack = True
            # Anything else before the handshake ends (wtxidrelay and sendaddrv2 belong there)
            # is ignored, as Core ignores it; the handshake's deadline still runs.

    # ------------------------------------------------------------------ messages

    async def _dispatch(self, peer: Peer, command: str, payload: bytes) -> None:
        try:
            if command in p2p.EMPTY and payload:
                raise DecodeError(f"{command} with a payload")
            if command == "ping":
                await peer.send("pong", p2p.ping_payload(p2p.parse_ping(payload)))
            elif command == "pong":
                nonce = p2p.parse_ping(payload)
                s = peer.stats
                if s.ping_nonce and nonce == s.ping_nonce:
                    s.ping_time = time.monotonic() - s.ping_sent
                    s.min_ping = min(s.ping_time, s.min_ping or s.ping_time)
                    s.ping_nonce = 0
            elif command == "sendheaders":
                peer.send_headers = True
            elif command == "getheaders":
                ask = p2p.GetHeaders.parse(payload)
                headers = await self.service.on_chain(headers_after, ask.locator, ask.stop, p2p.MAX_HEADERS)
                peer.known.update(h.hash() for h in headers[-1:])
                await peer.send("headers", p2p.headers_payload(headers))
            elif command == "headers":
                await self.sync.on_headers(peer, p2p.parse_headers(payload))
            elif command == "inv":
                await self.sync.on_inv(peer, p2p.parse_inv(payload))
            elif command == "getdata":
                await self._on_getdata(peer, p2p.parse_inv(payload))
            elif command == "block":
                await self.sync.on_block(peer, Block.parse(payload))
            elif command == "notfound":
                freed = False
                for item in p2p.parse_inv(payload):
                    if peer.in_flight.pop(item.hash, None) is not None:
                        self.sync.in_flight.pop(item.hash, None)
                        freed = True
                if freed:
                    self.sync.schedule()
            elif command == "sendcmpct":
                p2p.SendCmpct.parse(payload)  # understood; we announce by headers, not compact blocks
            elif command == "feefilter":
                p2p.parse_feefilter(payload)
            elif command == "version":
                raise Misbehaving("a second version message")
            # verack again, addr, addrv2, tx, getaddr, mempool and unknown commands: ignored
        except DecodeError as exc:
            raise Misbehaving(f"malformed {command}: {exc}") from None

    async def _on_getdata(self, peer: Peer, items: list[p2p.Inventory]) -> None:
        missing = []
        for item in items:
            block = None
            if item.is_block:
                with contextlib.suppress(InvalidInput):
                    block = await self.service.on_chain(Chain.block_by_hash, item.hash)
            if block is None:
                missing.append(item)
                continue
            if item.type & p2p.MSG_WITNESS_FLAG:
                raw = block.serialize()
            else:
                raw = block.header.serialize() + varint(len(block.txs)) + b"".join(
                    strip_witness(t.raw) for t in block.txs)
            peer.known.add(item.hash)
            await peer.send("block", raw)
        if missing:
            await peer.send("notfound", p2p.inv_payload(missing))

    async def _housekeeping(self) -> None:
        """Once a second: drop peers that stall a block, ping the quiet ones."""
        while not self.closing:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for peer in list(self.peers.values()):
                if not peer.ready:
                    continue
                if self.sync.stalled(peer, now):
                    log.info("peer %d stalled a block download; dropping it", peer.id)
                    peer.close()
                    continue
                s = peer.stats
                if not s.ping_nonce and now - s.ping_sent > PING_INTERVAL:
                    s.ping_nonce, s.ping_sent = random.getrandbits(64) or 1, now
                    self._spawn(self._quiet_send(peer, "ping", p2p.ping_payload(s.ping_nonce)))
            self.bans.sweep()

    async def _quiet_send(self, peer: Peer, command: str, payload: bytes) -> None:
        with contextlib.suppress(PeerGone):
            await peer.send(command, payload)

    # ------------------------------------------------------------------ relay

    def _on_accepted(self, accepted: Accepted) -> None:
        """A new tip: announced by one task that always sends the latest, so a batch of blocks
        stored during a sync is one announcement, not hundreds."""
        self._to_announce = accepted.hash
        if not self.closing and (self._announcer is None or self._announcer.done()):
            self._announcer = self._spawn(self._announce_latest())

    async def _announce_latest(self) -> None:
        while self._to_announce is not None:
            block_hash, self._to_announce = self._to_announce, None
            header = await self.service.on_chain(header_of, block_hash)
            if header is not None:
                self._announce(block_hash, header)

    def _announce(self, block_hash: bytes, header: BlockHeader) -> None:
        """Once to each peer that does not have it: its header to a peer that asked for headers
        (BIP 130) and has the parent, an inv otherwise (the peer then asks for headers)."""
        for peer in list(self.peers.values()):
            if not peer.ready or block_hash in peer.known:
                continue
            parent_known = header.prev_hash in peer.known or header.prev_hash == peer.best_known
            peer.known.add(block_hash)
            if peer.send_headers and parent_known:
                self._spawn(self._quiet_send(peer, "headers", p2p.headers_payload([header])))
            else:
                inv = p2p.inv_payload([p2p.Inventory(p2p.MSG_BLOCK, block_hash)])
                self._spawn(self._quiet_send(peer, "inv", inv))

    # ------------------------------------------------------------------ reports

    def peer_info(self) -> list[dict]:
        """getpeerinfo: peers past the handshake. synced_headers and synced_blocks are -1 until
        the peer has told us of a block, as in Core."""
        tip = self.service.tip.height if self.service.tip else 0
        return [p.info(p.best_height, min(tip, p.best_height), self.sync.in_flight_heights(p))
                for p in sorted(self.peers.values(), key=lambda p: p.id) if p.ready]
