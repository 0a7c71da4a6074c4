"""Control over RPC: stop, uptime, help."""

from __future__ import annotations

import asyncio
import time

from miner.node.rpc.protocol import Param
from miner.node.rpc.registry import METHODS, Context, rpc


@rpc("stop")
async def stop(ctx: Context) -> str:
    asyncio.get_running_loop().call_soon(ctx.stop)
    return "miner node stopping"


@rpc("uptime")
async def uptime(ctx: Context) -> int:
    return int(time.time() - ctx.service.started)


@rpc("getrpcinfo")
async def getrpcinfo(ctx: Context) -> dict:
    """Core's shape: the calls in progress, each with its duration in microseconds."""
    now = time.monotonic()
    return {"active_commands": [{"method": method, "duration": int((now - started) * 1e6)}
                                for method, started in list(ctx.active.values())],
            "logpath": ""}


@rpc("help", Param("command", "string"))
async def help_(ctx: Context, command: str | None) -> str:
    if command is None:
        return "\n".join(m.usage for _, m in sorted(METHODS.items()))
    m = METHODS.get(command)
    return m.usage if m else f"help: unknown command: {command}"
