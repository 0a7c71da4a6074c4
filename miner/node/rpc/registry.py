"""The RPC method registry: each method declares its parameters (positional or named, as Core's
`RPCHelpMan` does) and `dispatch` binds a call's parameters and runs it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from miner.errors import ChainError
from miner.node.rpc.protocol import (
    RPC_INVALID_PARAMETER,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    Param,
    RpcError,
    bind,
)
from miner.node.service import NodeService

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    name: str
    params: tuple[Param, ...]
    handler: Handler
    usage: str


METHODS: dict[str, Method] = {}


def rpc(name: str, *params: Param):
    def register(fn: Handler) -> Handler:
        usage = " ".join([name] + [p.name if p.required else f"( {p.name} )" for p in params])
        METHODS[name] = Method(name, params, fn, usage)
        return fn
    return register


class Context:
    """What a method call can reach: the service, the miner for generate, the stop switch."""

    def __init__(self, service: NodeService, generate=None, stop: Callable[[], None] | None = None):
        self.service = service
        self.generate = generate
        self.stop = stop or (lambda: None)
        self.stratum: Any = None  # the Stratum server (its `report()`), when the node serves one
        self.p2p: Any = None  # the peer-to-peer face (`node.p2p.manager.PeerManager`), when on
        # Calls in progress (getrpcinfo): a call leaves when it returns, fails or is cancelled
        # (its client went away), so an abandoned long poll does not stay behind.
        self.active: dict[object, tuple[str, float]] = {}


async def dispatch(ctx: Context, method: str, params: list | dict) -> Any:
    m = METHODS.get(method)
    if m is None:
        raise RpcError(RPC_METHOD_NOT_FOUND, "Method not found")
    values = bind(method, m.params, params, m.usage)
    call = object()
    ctx.active[call] = (method, time.monotonic())
    try:
        return await m.handler(ctx, *values)
    except RpcError:
        raise
    except ChainError as exc:  # the chain file failed under us (disk full): say so, keep serving
        raise RpcError(RPC_MISC_ERROR, str(exc)) from None
    finally:
        del ctx.active[call]


# --------------------------------------------------------------------------- argument helpers

def parse_hash(value: str, name: str) -> bytes:
    """Core's ParseHashV: 64 hex digits, shown order."""
    if len(value) != 64:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(value)}, for '{value[:100]}')")
    raw = hex_bytes(value)
    if raw is None:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{value[:100]}')")
    return raw[::-1]


def hex_bytes(value: str) -> bytes | None:
    """Hex as Core's IsHex takes it: hex digits only, an even number of them (Python's own
    `bytes.fromhex` would also skip whitespace); None for anything else."""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if 2 * len(raw) == len(value) else None  # whitespace was skipped: refused
