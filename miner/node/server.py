"""`miner node`: the chain served over HTTP JSON-RPC (aiohttp), until SIGINT, SIGTERM or `stop`.

HTTP is aiohttp's; this module adds what Bitcoin Core's HTTP server does around JSON-RPC:
Basic authentication checked before the body is read (a wrong password gets 401 after a pause,
one failure at a time, so guessing is slow), POST only, bodies capped (Core's 32 MiB), and
anything the client sends answered or dropped without touching the others.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import signal
import sys
import time
from functools import partial
from pathlib import Path

from aiohttp import web

from ..chain_lock import ChainLock
from ..errors import MinerError, UsageError
from ..params import ChainParams
from ..wire import Block
from .auth import COOKIE_NAME, Credentials, remove_cookie, write_cookie
from .methods import Context, dispatch
from .rpc import handle_body
from .service import NodeService

log = logging.getLogger(__name__)

MAX_BODY = 32 * 1024 * 1024  # Core's MAX_SIZE for an HTTP request
AUTH_FAILURE_DELAY = 0.25  # Core pauses 250 ms before each 401


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_app(ctx: Context, credentials: Credentials, max_body: int = MAX_BODY) -> web.Application:
    app = web.Application(client_max_size=max_body)
    failures = asyncio.Lock()

    async def handle(request: web.Request) -> web.StreamResponse:
        if not credentials.check(request.headers.get("Authorization")):
            async with failures:  # one failure at a time: a guesser gets 4 tries a second
                await asyncio.sleep(AUTH_FAILURE_DELAY)
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="jsonrpc"'})
        if request.method != "POST":
            return web.Response(status=405, text="JSONRPC server handles only POST requests")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text=f"request body larger than {max_body} bytes",
                                headers={"Connection": "close"})
        reply = await handle_body(body, partial(dispatch, ctx))
        if reply.body is None:
            return web.Response(status=204)
        return web.Response(status=reply.status, body=json.dumps(reply.body).encode(),
                            content_type="application/json")

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


class Generator:
    """generatetoaddress: blocks mined with the node's own backends on its own templates,
    through the same job building as `miner mine --url` and the same submit path as any block."""

    def __init__(self, service: NodeService, backend_spec: str, threads: int | None, cpu_kernel: str):
        self.service = service
        self.spec, self.threads, self.cpu_kernel = backend_spec, threads, cpu_kernel
        self._backends = None
        self._lock = asyncio.Lock()

    def _make(self):
        from ..backends.registry import make_backends
        backends = make_backends(self.spec, threads=self.threads, cpu_kernel=self.cpu_kernel)
        for b in backends:
            b.warm_up()
        return backends

    def _solve(self, job, max_tries: int):
        from ..coordinator import Coordinator
        coordinator = Coordinator(self._backends, unit_seconds=0.1).start()
        try:
            coordinator.set_job(job)
            while True:
                solution = coordinator.wait_solution(timeout=0.02)
                tried = sum(s.hashes for s in coordinator.stats.values())
                if solution is not None or tried >= max_tries or self.service.closing:
                    return solution, tried
        finally:
            coordinator.stop()

    async def generate(self, nblocks: int, script: bytes, maxtries: int) -> list[str]:
        from ..sources.gbt import block_hex, job_from_template
        loop = asyncio.get_running_loop()
        hashes: list[str] = []
        async with self._lock:
            if self._backends is None:
                self._backends = await loop.run_in_executor(None, self._make)
            left = maxtries
            while len(hashes) < nblocks and left > 0 and not self.service.closing:
                job = job_from_template(self.service.template(), script, b"miner node")
                solution, tried = await loop.run_in_executor(None, self._solve, job, left)
                left -= tried
                if solution is None:
                    break
                block = Block.parse(bytes.fromhex(block_hex(solution)))
                if await self.service.submit_block(block) is None:
                    hashes.append(solution.header.hash_hex())
        return hashes


def _say(json_mode: bool, event: dict, text: str) -> None:
    print(json.dumps(event) if json_mode else text, flush=True)


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
        runner = web.AppRunner(make_app(ctx, Credentials(pairs)), access_log=None,
                               handle_signals=False)
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
            json_mode, {"event": "block", "height": a.height, "hash": a.hash[::-1].hex(), "at": a.at},
            f"block {a.height:>6}  {a.hash[::-1].hex()}  accepted"))
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


def cmd_node(args) -> int:
    from ..chain import check_chain_path
    from ..params import preset
    host = args.rpc_bind
    if (args.rpc_user is None) != (args.rpc_password is None):
        raise UsageError("give --rpc-user and --rpc-password together")
    if args.rpc_password is not None and not args.rpc_password:
        raise UsageError("--rpc-password must not be empty")
    if not is_loopback(host) and args.rpc_user is None:
        raise UsageError(f"--rpc-bind {host} is not a loopback address: refusing to serve it without "
                         f"--rpc-user and --rpc-password")
    if not 0 <= args.rpc_port <= 65535:
        raise UsageError(f"--rpc-port must be 0 to 65535, got {args.rpc_port}")
    chain_path = Path(args.chain)
    check_chain_path(chain_path, must_exist=False)
    params = preset(args.preset, int(time.time()))
    cookie = None
    if args.rpc_user is None:
        cookie = Path(args.rpc_cookie_file) if args.rpc_cookie_file else chain_path.resolve().parent / COOKIE_NAME
    try:
        asyncio.run(serve(chain_path, params, host, args.rpc_port, args.rpc_user, args.rpc_password,
                          cookie, (args.backend, args.threads, args.cpu_kernel), args.json))
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
    return 0
