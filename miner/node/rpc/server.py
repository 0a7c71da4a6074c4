"""The node's HTTP face: JSON-RPC over aiohttp.

HTTP is aiohttp's; this module adds what Bitcoin Core's HTTP server does around JSON-RPC:
Basic authentication checked before the body is read (a wrong password gets 401 after a pause,
one failure at a time, so guessing is slow), POST only, bodies capped (Core's 32 MiB), and
anything the client sends answered or dropped without touching the others.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from functools import partial

from aiohttp import web

from miner.node.rpc.auth import Credentials
from miner.node.rpc.methods import Context, dispatch
from miner.node.rpc.protocol import handle_body

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
