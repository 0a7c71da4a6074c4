"""The node's HTTP face: JSON-RPC over aiohttp.

HTTP is aiohttp's; this module adds what Bitcoin Core's HTTP server does around JSON-RPC:
Basic authentication checked before the body is read (no credentials get 401 at once, a wrong
password after a pause, one failure at a time, so guessing is slow; either way the connection
is closed without reading the body, which aiohttp would otherwise drain for 10 s), POST only, bodies
capped (Core's 32 MiB), and anything the client sends answered or dropped without touching the
others. The node's guard (`miner.node.guard`) admits the connection; this module tells it what
the connection proved and when a request starts and ends, and applies its body, reply and rate
limits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from miner.node.guard import Connection, Guard
from miner.node.rpc.auth import Credentials
from miner.node.rpc.methods import Context, dispatch
from miner.node.rpc.protocol import handle_body

MAX_BODY = 16 * 1024 * 1024  # twice the hex of the largest block (Core allows 32 MiB: see below)
AUTH_FAILURE_DELAY = 0.25  # Core pauses 250 ms before each 401


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _closing(response: web.Response) -> web.Response:
    response.force_close()
    return response


def make_app(ctx: Context, credentials: Credentials, guard: Guard, max_body: int = MAX_BODY) -> web.Application:
    app = web.Application(client_max_size=max_body)
    failures = asyncio.Lock()
    limits = guard.limits

    async def respond(request: web.Request, conn: Connection) -> web.Response:
        authorization = request.headers.get("Authorization")
        if not credentials.check(authorization):
            if authorization is not None:  # a wrong password, as Core: one failure at a time, 4 a second
                async with failures:
                    await asyncio.sleep(AUTH_FAILURE_DELAY)
            return _closing(web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="jsonrpc"'}))
        conn.authenticate()
        if request.method != "POST":
            return web.Response(status=405, text="JSONRPC server handles only POST requests")
        try:
            body = await asyncio.wait_for(_read_body(request, max_body), limits.body_timeout)
        except web.HTTPRequestEntityTooLarge:
            return _closing(web.Response(status=413, text=f"request body larger than {max_body} bytes"))
        except asyncio.TimeoutError:
            return _closing(web.Response(status=408, text=f"request body not received within "
                                                          f"{limits.body_timeout:g} s"))
        except (HttpProcessingError, RequestPayloadError):  # a body that does not decode (garbage gzip)
            return _closing(web.Response(status=400, text="request body does not decode as its "
                                                          "Content-Encoding says"))

        async def limited(method: str, params: object) -> object:
            await conn.throttle()
            return await dispatch(ctx, method, params)

        reply = await handle_body(body, limited)
        if reply.body is None:
            return web.Response(status=204)
        return web.Response(status=reply.status, body=json.dumps(reply.body).encode(),
                            content_type="application/json")

    async def handle(request: web.Request) -> web.StreamResponse:
        conn = guard.connection(request.transport)
        if conn is None:  # dropped by the guard while its request was read
            return _closing(web.Response(status=503))
        conn.begin()
        try:
            response = await respond(request, conn)
            try:  # sent here, under the reply limit: a client that stops reading loses its slot
                await asyncio.wait_for(_send(request, response), limits.write_timeout)
            except asyncio.TimeoutError:
                if request.transport is not None:
                    request.transport.abort()
            if response.status == 401 and request.protocol is not None:
                # A stranger's body is not read after the answer. (A client with credentials
                # refused 413 has the rest of its body drained, as aiohttp does, so a client that
                # sends it all before reading, as most do, gets its answer and not a reset.)
                request.protocol.force_close()
            return response
        finally:
            conn.end()

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _read_body(request: web.Request, max_body: int) -> str | bytes:
    """The body, as text when it is UTF-8 (JSON-RPC's only encoding; anything else stays bytes
    and is a parse error). Read chunk by chunk into one buffer that is dropped once decoded, so
    a large body costs twice its size at most while it is parsed, not the three or four copies
    of reading it whole and decoding it inside the parser."""
    declared = request.content_length
    if declared is not None and declared > max_body:
        raise web.HTTPRequestEntityTooLarge(max_size=max_body, actual_size=declared)
    buffer = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        buffer += chunk
        if len(buffer) > max_body:
            raise web.HTTPRequestEntityTooLarge(max_size=max_body, actual_size=len(buffer))
    try:
        return buffer.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(buffer)


async def _send(request: web.Request, response: web.Response) -> None:
    await response.prepare(request)
    await response.write_eof()
