"""`miner node` running: the chain file locked, the service opened, the RPC served on 127.0.0.1
(or where told), until SIGINT, SIGTERM or the `stop` method, and everything released after."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from miner.chain.files import remove_new_chain
from miner.chain.lock import ChainLock
from miner.consensus.params import ChainParams, check_same_preset
from miner.errors import MinerError
from miner.node.generate import Generator
from miner.node.guard import Guard
from miner.node.limits import GuardLimits
from miner.node.memory import return_large_blocks
from miner.node.metrics import NodeCollector, serve_metrics
from miner.node.output import LineWriter, install_logging, loop_exception_handler
from miner.node.p2p.bans import BanList
from miner.node.p2p.manager import PeerManager, PeerOptions
from miner.node.rpc.auth import Credentials, new_cookie, remove_cookie, write_cookie
from miner.node.rpc.methods import Context
from miner.node.rpc.server import make_app
from miner.node.service import NodeService
from miner.node.stratum.config import StratumConfig
from miner.node.stratum.ranking import TOP_WORKERS
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


async def serve(chain_path: Path, params: ChainParams, host: str, port: int,
                user: str | None, password: str | None, cookie_file: Path | None,
                generator_args: tuple[str, int | None, str], json_mode: bool,
                limits: GuardLimits | None = None, stratum: tuple[str, int, StratumConfig] | None = None,
                metrics: tuple[str, int] | None = None, peers: PeerOptions | None = None,
                top_workers: int = TOP_WORKERS, require_preset: bool = False) -> None:
    """Serve `chain_path`, created with `params` if it does not exist; `require_preset`: the
    preset was asked for (`--preset`), so an existing chain made with another is refused.

    A start that fails (a port in use, a cookie that cannot be written) leaves nothing behind:
    the cookie is written only once every face listens, and a chain this run created is removed
    again while nothing has been stored on it."""
    return_large_blocks()
    events = _Events(json_mode)
    logs = LineWriter(sys.stderr.fileno())
    install_logging(logs)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(loop_exception_handler)
    lock = ChainLock(chain_path, exclusive=True).acquire()
    creating = not chain_path.exists()  # under the exclusive lock: nobody else creates it meanwhile
    started = False
    service = NodeService(chain_path)
    guard = Guard((limits or GuardLimits()).serving(stratum is not None, peers is not None and peers.listen is not None,
                                                    peers is not None and bool(peers.connect), metrics is not None))
    runner: web.AppRunner | None = None
    server: asyncio.base_events.Server | None = None
    pool: StratumServer | None = None
    network: PeerManager | None = None
    metrics_runner: web.AppRunner | None = None
    metrics_server: asyncio.base_events.Server | None = None
    cookie_pair: str | None = None
    try:
        await service.open(params)
        if require_preset:
            check_same_preset(service.chain.params, params.name, chain_path)
        stopping = asyncio.Event()
        ctx = Context(service, Generator(service, *generator_args).generate, stopping.set)
        pairs = []
        if user is not None:
            pairs.append(f"{user}:{password}")
        else:
            assert cookie_file is not None
            pairs.append(new_cookie())
        # A client that goes away cancels its call (an abandoned long poll is released), and a
        # shutdown waits for unfinished requests (a stalled upload) a few seconds, not a minute.
        # The guard times connections out; aiohttp's keep-alive timer is left far behind it.
        runner = web.AppRunner(make_app(ctx, Credentials(pairs), guard), access_log=None,
                               handle_signals=False, handler_cancellation=True,
                               shutdown_timeout=SHUTDOWN_TIMEOUT, keepalive_timeout=3600)
        await runner.setup()
        try:
            server = await guard.listen(runner.server, host, port)
        except OSError as exc:
            raise MinerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        bound = server.sockets[0].getsockname()[1]  # the real port when --rpc-port 0
        stratum_port = None
        if stratum is not None:
            pool = StratumServer(service, guard, stratum[2])
            stratum_port = await pool.start(stratum[0], stratum[1])
            ctx.stratum = pool
        p2p_port = None
        if peers is not None:
            assert service.chain is not None
            bans = BanList(chain_path.with_name(chain_path.name + ".banlist.json"))
            network = PeerManager(service, guard, service.chain.params, bans, events.say)
            try:
                await network.start(peers.listen, list(peers.connect))
            except OSError as exc:
                raise MinerError(f"cannot listen for peers on {peers.listen[0]}:{peers.listen[1]}: "
                                 f"{exc.strerror}") from None
            p2p_port = network.port
            ctx.p2p = network
        metrics_port = None
        if metrics is not None:
            registry = CollectorRegistry()
            registry.register(NodeCollector(service, guard, pool, top_workers))
            metrics_runner, metrics_server, metrics_port = await serve_metrics(registry, guard, *metrics)
        if user is None:
            try:
                cookie_pair = write_cookie(cookie_file, pairs[0])
            except OSError as exc:
                raise MinerError(f"cannot write the cookie file {cookie_file}: {exc.strerror}") from None
        url = f"http://{host}:{bound}"
        lock.publish(url, cookie_file.resolve() if cookie_pair and cookie_file else None)
        service.listeners.append(lambda a: events.say(
            {"event": "block", "height": a.height, "hash": display_hex(a.hash), "at": a.at},
            f"block {a.height:>6}  {display_hex(a.hash)}  accepted"))
        events.say({"event": "listening", "url": url, "port": bound, "chain": str(chain_path),
                    "height": service.tip.height, "cookie": str(cookie_file) if cookie_pair else None,
                    "max_connections": guard.limits.max_connections, "stratum_port": stratum_port,
                    "stratum_max_miners": guard.limits.stratum_miners, "inbound_peers": guard.limits.inbound_peers,
                    "metrics_port": metrics_port, "p2p_port": p2p_port},
                   f"miner node: {chain_path} (tip {service.tip.height}) at {url}, "
                   + (f"cookie {cookie_file}" if cookie_pair else "user and password auth")
                   + (f", Stratum at stratum+tcp://{stratum[0]}:{stratum_port}" if stratum is not None else "")
                   + (f", metrics at http://{metrics[0]}:{metrics_port}/metrics" if metrics is not None else "")
                   + (f", peers at {peers.listen[0]}:{p2p_port}" if peers is not None and peers.listen else "")
                   + f", up to {guard.limits.max_connections} RPC connections"
                   + (f", {guard.limits.stratum_miners} miners" if guard.limits.stratum_miners is not None else "")
                   + (f", {guard.limits.inbound_peers} inbound peers" if guard.limits.inbound_peers is not None
                      else ""))
        started = True
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
    finally:
        service.closing = True
        if network is not None:
            await network.close()
        if pool is not None:
            await pool.close()  # miners are told to reconnect
        if metrics_server is not None:
            metrics_server.close()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        if server is not None:
            server.close()  # no new connections; the open ones are ended by the runner
        if runner is not None:
            await service.close_waiters()
            await runner.cleanup()
        await guard.close()
        await service.close()
        if cookie_pair is not None and cookie_file is not None:
            remove_cookie(cookie_file, cookie_pair)
        if creating and not started and service.tip is not None and service.tip.height == 0:
            remove_new_chain(chain_path)  # a failed start; a block stored meanwhile (a peer's) keeps it
        lock.release()
        logs.close()
    events.say({"event": "stopped", "at": time.time()}, "miner node: stopped")
    events.writer.close()
