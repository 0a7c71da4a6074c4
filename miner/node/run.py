"""`miner node` running: the chain file locked, the service opened, the RPC served on 127.0.0.1
(or where told), until SIGINT, SIGTERM or the `stop` method, and everything released after."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from contextlib import AsyncExitStack

from aiohttp import web
from prometheus_client import CollectorRegistry

from miner.chain.files import remove_new_chain
from miner.chain.lock import ChainLock
from miner.consensus.params import check_same_preset
from miner.errors import MinerError
from miner.node.config import NodeConfig, RpcOptions
from miner.node.generate import Generator
from miner.node.guard import Guard
from miner.node.log_writer import LineWriter, install_logging, loop_exception_handler
from miner.node.malloc_tuning import return_large_blocks
from miner.node.metrics import NodeCollector, serve_metrics
from miner.node.p2p.bans import BanList
from miner.node.p2p.manager import PeerManager
from miner.node.rpc.auth import Credentials, new_cookie, remove_cookie, write_cookie
from miner.node.rpc.methods import Context
from miner.node.rpc.server import make_app
from miner.node.service import NodeService
from miner.node.stratum.server import StratumServer
from miner.primitives.hashes import display_hex

SHUTDOWN_TIMEOUT = 3.0  # s


class _Events:
    """Event lines on standard output, through a writer that never blocks the node: a reader
    that went away (`miner node | head -1`; SIGPIPE is ignored in the node) or stopped reading
    costs the lines, not the service."""

    def __init__(self, json_mode: bool):
        self.json_mode = json_mode
        self.writer = LineWriter(sys.stdout.fileno())

    def say(self, event: dict, text: str) -> None:
        self.writer.line(json.dumps(event) if self.json_mode else text)


async def serve(config: NodeConfig) -> None:
    """Serve `config.chain_path` until told to stop, then release everything in the reverse
    order it was taken (one exit stack: the faces first, then the guard, the chain, the cookie,
    the lock).

    A start that fails (a port in use, a cookie that cannot be written) leaves nothing behind:
    the cookie is written only once every face listens, and a chain this run created is removed
    again while nothing has been stored on it."""
    return_large_blocks()
    events = _Events(config.json_mode)
    async with AsyncExitStack() as stack:
        node = _Node(config, events)
        await node.start(stack)
        await node.stopping.wait()
    events.say({"event": "stopped", "at": time.time()}, "miner node: stopped")
    events.writer.close()


class _Cookie:
    """The RPC's credentials: the user and password given, else a fresh cookie pair, written to
    the cookie file once every face listens and removed at the stop while it is still ours."""

    def __init__(self, rpc: RpcOptions):
        self.path = rpc.cookie_file
        self.given = rpc.user is not None
        self.pair = f"{rpc.user}:{rpc.password}" if self.given else new_cookie()
        assert self.given or self.path is not None
        self.written: str | None = None

    def write(self) -> None:
        if self.given or self.path is None:
            return
        try:
            self.written = write_cookie(self.path, self.pair)
        except OSError as exc:
            raise MinerError(f"cannot write the cookie file {self.path}: {exc.strerror}") from None

    def remove(self) -> None:
        if self.written is not None and self.path is not None:
            remove_cookie(self.path, self.written)


class _Node:
    """One run of the node: what it opened, each face's bound port, and the event that stops it."""

    def __init__(self, config: NodeConfig, events: _Events):
        self.config, self.events = config, events
        self.stopping = asyncio.Event()
        self.started = False
        self.ports: dict[str, int | None] = {"rpc": None, "stratum": None, "p2p": None, "metrics": None}

    async def start(self, stack: AsyncExitStack) -> None:
        """Take the chain and open every face, each release pushed on `stack` as it is taken."""
        config = self.config
        logs = LineWriter(sys.stderr.fileno())
        install_logging(logs)
        stack.callback(logs.close)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(loop_exception_handler)
        lock = ChainLock(config.chain_path, exclusive=True).acquire()
        stack.callback(lock.release)
        creating = not config.chain_path.exists()  # under the exclusive lock: nobody else creates it meanwhile
        self.service = service = NodeService(config.chain_path)
        stack.callback(self._forget_failed_start, creating)
        cookie = _Cookie(config.rpc)
        stack.callback(cookie.remove)
        stack.push_async_callback(service.close)
        self.guard = Guard(config.guard_limits())
        stack.push_async_callback(self.guard.close)
        faces = await stack.enter_async_context(AsyncExitStack())
        stack.callback(setattr, service, "closing", True)  # first of all: the faces see it as they close
        await service.open(config.params)
        if config.require_preset:
            check_same_preset(service.chain.params, config.params.name, config.chain_path)
        generator = config.generator
        ctx = Context(service, Generator(service, generator.backend, generator.threads, generator.cpu_kernel).generate,
                      self.stopping.set)
        await self._serve_rpc(faces, ctx, cookie.pair)
        ctx.stratum = await self._serve_stratum(faces)
        ctx.p2p = await self._serve_peers(faces)
        await self._serve_metrics(faces, ctx.stratum)
        cookie.write()
        url = f"http://{config.rpc.host}:{self.ports['rpc']}"
        cookie_file = config.rpc.cookie_file if cookie.written else None
        lock.publish(url, cookie_file.resolve() if cookie_file else None)
        service.listeners.append(lambda a: self.events.say(
            {"event": "block", "height": a.height, "hash": display_hex(a.hash), "at": a.at},
            f"block {a.height:>6}  {display_hex(a.hash)}  accepted"))
        self.events.say(*_listening(config, self.guard, self.ports, url, service.tip.height, cookie_file))
        self.started = True
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)

    async def _serve_rpc(self, faces: AsyncExitStack, ctx: Context, pair: str) -> None:
        # A client that goes away cancels its call (an abandoned long poll is released), and a
        # shutdown waits for unfinished requests (a stalled upload) a few seconds, not a minute.
        # The guard times connections out; aiohttp's keep-alive timer is left far behind it.
        host, port = self.config.rpc.host, self.config.rpc.port
        runner = web.AppRunner(make_app(ctx, Credentials([pair]), self.guard), access_log=None,
                               handle_signals=False, handler_cancellation=True,
                               shutdown_timeout=SHUTDOWN_TIMEOUT, keepalive_timeout=3600)
        faces.push_async_callback(self._close_rpc, runner)
        await runner.setup()
        try:
            server = await self.guard.listen(runner.server, host, port)
        except OSError as exc:
            raise MinerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        faces.callback(server.close)  # no new connections; the open ones are ended by the runner
        self.ports["rpc"] = server.sockets[0].getsockname()[1]  # the real port when --rpc-port 0

    async def _close_rpc(self, runner: web.AppRunner) -> None:
        await self.service.close_waiters()
        await runner.cleanup()

    async def _serve_stratum(self, faces: AsyncExitStack) -> StratumServer | None:
        options = self.config.stratum
        if options is None:
            return None
        pool = StratumServer(self.service, self.guard, options.config)
        faces.push_async_callback(pool.close)  # miners are told to reconnect
        self.ports["stratum"] = await pool.start(options.host, options.port)
        return pool

    async def _serve_peers(self, faces: AsyncExitStack) -> PeerManager | None:
        peers, service = self.config.peers, self.service
        if peers is None:
            return None
        assert service.chain is not None
        path = self.config.chain_path
        bans = BanList(path.with_name(path.name + ".banlist.json"))
        network = PeerManager(service, self.guard, service.chain.params, bans, self.events.say)
        faces.push_async_callback(network.close)
        try:
            await network.start(peers.listen, list(peers.connect))
        except OSError as exc:
            raise MinerError(f"cannot listen for peers on {peers.listen[0]}:{peers.listen[1]}: "
                             f"{exc.strerror}") from None
        self.ports["p2p"] = network.port
        return network

    async def _serve_metrics(self, faces: AsyncExitStack, pool: StratumServer | None) -> None:
        options = self.config.metrics
        if options is None:
            return
        registry = CollectorRegistry()
        registry.register(NodeCollector(self.service, self.guard, pool, options.top_workers))
        runner, server, self.ports["metrics"] = await serve_metrics(registry, self.guard, options.host, options.port)
        faces.push_async_callback(runner.cleanup)
        faces.callback(server.close)

    def _forget_failed_start(self, creating: bool) -> None:
        tip = self.service.tip
        if creating and not self.started and tip is not None and tip.height == 0:
            remove_new_chain(self.config.chain_path)  # a failed start; a block stored meanwhile (a peer's) keeps it


def _listening(config: NodeConfig, guard: Guard, ports: dict[str, int | None], url: str, height: int,
               cookie_file) -> tuple[dict, str]:
    """The `listening` event: every face's address and budget, as JSON and as one line of text."""
    limits, stratum, metrics, peers = guard.limits, config.stratum, config.metrics, config.peers
    event = {"event": "listening", "url": url, "port": ports["rpc"], "chain": str(config.chain_path),
             "height": height, "cookie": str(cookie_file) if cookie_file else None,
             "max_connections": limits.max_connections, "stratum_port": ports["stratum"],
             "stratum_max_miners": limits.stratum_miners, "inbound_peers": limits.inbound_peers,
             "metrics_port": ports["metrics"], "p2p_port": ports["p2p"]}
    text = (f"miner node: {config.chain_path} (tip {height}) at {url}, "
            + (f"cookie {cookie_file}" if cookie_file else "user and password auth")
            + (f", Stratum at stratum+tcp://{stratum.host}:{ports['stratum']}" if stratum is not None else "")
            + (f", metrics at http://{metrics.host}:{ports['metrics']}/metrics" if metrics is not None else "")
            + (f", peers at {peers.listen[0]}:{ports['p2p']}" if peers is not None and peers.listen else "")
            + f", up to {limits.max_connections} RPC connections"
            + (f", {limits.stratum_miners} miners" if limits.stratum_miners is not None else "")
            + (f", {limits.inbound_peers} inbound peers" if limits.inbound_peers is not None else ""))
    return event, text
