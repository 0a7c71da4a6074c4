"""JSON-RPC as Bitcoin Core speaks it over HTTP: request shapes, error codes and reply statuses.

Kept apart from HTTP and from the methods, so the protocol rules are in one place:
- A request is an object, or a batch (an array of them). `"jsonrpc": "2.0"` gets a JSON-RPC 2.0
  reply (`result` or `error`, never both, status 200, and nothing at all for a notification,
  one without an `id`); anything else is a legacy 1.0 reply, `{"result", "error", "id"}`, whose
  HTTP status follows the error as Core sets it (404 unknown method, 400 invalid request, 500
  other errors). A batch always answers 200 with one reply per request that needs one.
- Error codes and messages are Core's (`src/rpc/protocol.h`), so a client written against Core
  reads ours the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# Bitcoin Core's RPCErrorCode values (src/rpc/protocol.h).
RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_PARAMS = -32602
RPC_INTERNAL_ERROR = -32603
RPC_PARSE_ERROR = -32700
RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_OUT_OF_MEMORY = -7
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_CHAIN = -27
RPC_IN_WARMUP = -28

MAX_BATCH = 1000  # requests in one batch; a longer one is refused as a whole
MAX_VALUES = 100_000  # JSON values in one body; a 1,000-request batch uses a few thousand


class RpcError(Exception):
    """An error a method answers with: Core's code and message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_json(self) -> dict:
        return {"code": self.code, "message": self.message}


@dataclass
class Reply:
    status: int
    body: Any  # JSON-serializable, or None for no body (204)


Dispatch = Callable[[str, Any], Awaitable[Any]]  # (method, params) -> result or RpcError


def _legacy_status(code: int) -> int:
    if code == RPC_INVALID_REQUEST:
        return 400
    if code == RPC_METHOD_NOT_FOUND:
        return 404
    return 500


def _no_constant(name: str) -> None:
    """NaN and Infinity are not JSON: Core's parser refuses them, and echoing one in an `id`
    would make the reply unreadable to every strict client."""
    raise ValueError(f"{name} is not JSON")


def _too_many_values(body: bytes | str) -> bool:
    """More arrays, objects and separators than MAX_VALUES, counted at memory speed before the
    parse: what costs a JSON parser time and memory is values, not bytes (32 MiB of one hex
    string parses in milliseconds; 32 MiB of `[1,1,...]` builds 16 million objects, seconds of
    a stalled event loop and hundreds of MiB). Separators inside strings count too, which no
    request this node serves has in such numbers."""
    if len(body) <= MAX_VALUES:
        return False
    if isinstance(body, str):
        return body.count(",") + body.count("[") + body.count("{") > MAX_VALUES
    return body.count(b",") + body.count(b"[") + body.count(b"{") > MAX_VALUES


async def handle_body(body: bytes | str, dispatch: Dispatch) -> Reply:
    """One HTTP request body to its reply. A batch's requests are answered one after another
    with a turn for every other client in between."""
    if _too_many_values(body):
        return Reply(400, {"result": None, "error": {
            "code": RPC_INVALID_REQUEST, "message": f"Request has more than {MAX_VALUES} JSON values"},
            "id": None})
    try:
        request = json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Reply(500, {"result": None, "error": {"code": RPC_PARSE_ERROR, "message": "Parse error"},
                           "id": None})
    if isinstance(request, list):
        if len(request) > MAX_BATCH:
            return Reply(400, {"result": None, "error": {
                "code": RPC_INVALID_REQUEST, "message": f"Batch of {len(request)} requests is larger "
                                                       f"than the limit of {MAX_BATCH}"}, "id": None})
        replies = []
        for item in request:
            await asyncio.sleep(0)
            reply = await _one(item, dispatch)
            if reply is not None:
                replies.append(reply[1])
        return Reply(200, replies)  # Core answers an all-notification batch with [] as well
    if not isinstance(request, dict):
        return Reply(400, {"result": None, "error": {"code": RPC_PARSE_ERROR,
                                                     "message": "Top-level object parse error"}, "id": None})
    reply = await _one(request, dispatch)
    if reply is None:
        return Reply(204, None)
    return Reply(*reply)


async def _one(request: Any, dispatch: Dispatch) -> tuple[int, dict] | None:
    """(HTTP status, reply object), or None for a JSON-RPC 2.0 notification."""
    if not isinstance(request, dict):
        return 400, {"result": None, "error": {"code": RPC_INVALID_REQUEST,
                                               "message": "Invalid Request object"}, "id": None}
    v2 = request.get("jsonrpc") == "2.0"
    rid = request.get("id")
    if v2 and "id" not in request:
        notification = True
    else:
        notification = False
    try:
        if "jsonrpc" in request and request["jsonrpc"] not in ("1.0", "2.0"):
            raise RpcError(RPC_INVALID_REQUEST, "JSON-RPC version not supported")
        method = request.get("method")
        if method is None:
            raise RpcError(RPC_INVALID_REQUEST, "Missing method")
        if not isinstance(method, str):
            raise RpcError(RPC_INVALID_REQUEST, "Method must be a string")
        params = request.get("params", [])
        if params is None:
            params = []
        if not isinstance(params, (list, dict)):
            raise RpcError(RPC_INVALID_REQUEST, "Params must be an array or object")
        result = await dispatch(method, params)
    except RpcError as exc:
        if notification:
            return None
        if v2:
            return 200, {"jsonrpc": "2.0", "error": exc.to_json(), "id": rid}
        return _legacy_status(exc.code), {"result": None, "error": exc.to_json(), "id": rid}
    if notification:
        return None
    if v2:
        return 200, {"jsonrpc": "2.0", "result": result, "id": rid}
    return 200, {"result": result, "error": None, "id": rid}


# --------------------------------------------------------------------------- parameters

_TYPE_NAMES = {bool: "bool", int: "number", float: "number", str: "string", list: "array",
               dict: "object", type(None): "null"}


def type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), "unknown")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "number", "string", "bool", "object", "array", "any"
    required: bool = False
    default: Any = None


def bind(method: str, specs: tuple[Param, ...], params: list | dict, usage: str) -> list:
    """Positional or named parameters to a list of values in `specs` order, checked as Core
    checks them: too many or too few is RPC_MISC_ERROR with the method's usage line (Core puts
    its help text there), a wrong JSON type is RPC_TYPE_ERROR naming the position."""
    if isinstance(params, dict):
        unknown = [k for k in params if k not in {s.name for s in specs}]
        if unknown:
            raise RpcError(RPC_MISC_ERROR, f"Unknown named parameter {unknown[0]}")
        values = [params.get(s.name) for s in specs]
    else:
        if len(params) > len(specs):
            raise RpcError(RPC_MISC_ERROR, usage)
        values = list(params) + [None] * (len(specs) - len(params))
    out = []
    for position, (spec, value) in enumerate(zip(specs, values), start=1):
        if value is None:
            if spec.required:
                raise RpcError(RPC_MISC_ERROR, usage)
            out.append(spec.default)
            continue
        ok = (spec.kind == "any"
              or (spec.kind == "number" and type(value) in (int, float))
              or (spec.kind != "number" and type_name(value) == spec.kind))
        if not ok:
            raise RpcError(RPC_TYPE_ERROR, f"Wrong type passed:\n{{\n    \"Position {position} ({spec.name})\": "
                           f"\"JSON value of type {type_name(value)} is not of expected type {spec.kind}\"\n}}")
        out.append(value)
    return out


def as_int(value: Any, name: str) -> int:
    """A JSON number that must be whole (Core's getInt refuses 1.5)."""
    if isinstance(value, float):
        if not value.is_integer():
            raise RpcError(RPC_TYPE_ERROR, f"JSON number {value} for {name} is not an integer")
        return int(value)
    return value
