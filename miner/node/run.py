"""`miner node` running: the chain file locked, the service opened, the RPC served on 127.0.0.1
(or where told), until SIGINT, SIGTERM or the `stop` method, and everything released after."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from miner.chain.lock import ChainLock
from miner.consensus.params import ChainParams
from miner.errors import MinerError
from miner.node.generate import Generator
from miner.node.rpc.auth import Credentials, remove_cookie, write_cookie
from miner.node.rpc.methods import Context
from miner.node.rpc.server import make_app
from miner.node.service import NodeService
from miner.primitives.hashes import display_hex

SHUTDOWN_TIMEOUT = 3.0  # s


def _say(json_mode: bool, event: dict, text: str) -> None:
    """One event line on standard output. A reader that went away (`miner node | head -1`) must
    not stop the node: its lines go nowhere from then on (SIGPIPE is ignored in the node, so a
    write to a closed pipe is this BrokenPipeError instead of the end of the process)."""
    try:
        print(json.dumps(event) if json_mode else text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush fails no more
        os.close(devnull)


async def serve(chain_path: Path, params: ChainParams, host: str, port: int,
                user: str | None, password: str | None, cookie_file: Path | None,
                generator_args: tuple[str, int | None, str], json_mode: bool) -> None:
    lock = ChainLock(chain_path, exclusive=True).acquire()
    service = NodeService(chain_path)
    runner: web.AppRunner | None = None
    cookie_pair: str | None = None
    try:
        await service.open(params)
        stopping = asyncio.Event()
        ctx = Context(service, Generator(service, *generator_args).generate, stopping.set)
        pairs = []
        if user is not None:
            pairs.append(f"{user}:{password}")
        else:
            assert cookie_file is not None
            try:
                cookie_pair = write_cookie(cookie_file)
            except OSError as exc:
                raise MinerError(f"cannot write the cookie file {cookie_file}: {exc.strerror}") from None
            pairs.append(cookie_pair)
        # A client that goes away cancels its call (an abandoned long poll is released), and a
        # shutdown waits for unfinished requests (a stalled upload) a few seconds, not a minute.
        runner = web.AppRunner(make_app(ctx, Credentials(pairs)), access_log=None, handle_signals=False,
                               handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise MinerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        bound = runner.addresses[0][1]  # the real port when --rpc-port 0
        url = f"http://{host}:{bound}"
        lock.publish(url)
        service.listeners.append(lambda a: _say(
            json_mode, {"event": "block", "height": a.height, "hash": display_hex(a.hash), "at": a.at},
            f"block {a.height:>6}  {display_hex(a.hash)}  accepted"))
        _say(json_mode, {"event": "listening", "url": url, "port": bound, "chain": str(chain_path),
                         "height": service.tip.height,
                         "cookie": str(cookie_file) if cookie_pair else None},
             f"miner node: {chain_path} (tip {service.tip.height}) at {url}, "
             + (f"cookie {cookie_file}" if cookie_pair else "user and password auth"))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
    finally:
        service.closing = True
        if runner is not None:
            await service.close_waiters()
            await runner.cleanup()
        await service.close()
        if cookie_pair is not None and cookie_file is not None:
            remove_cookie(cookie_file, cookie_pair)
        lock.release()
    _say(json_mode, {"event": "stopped", "at": time.time()}, "miner node: stopped")
