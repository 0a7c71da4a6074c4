"""Network RPCs with Core's names, shapes and error codes: getpeerinfo, getconnectioncount,
getnetworkinfo, addnode, disconnectnode, setban, listbanned, clearbanned.

A node started without peer-to-peer (`--listen`, `--connect` both absent) still answers the
read-only ones (no peers) and refuses those that change connections with Core's
RPC_CLIENT_P2P_DISABLED.
"""

from __future__ import annotations

import time

from miner.errors import InvalidInput
from miner.node.p2p.bans import DEFAULT_BAN_TIME, normalize_subnet
from miner.node.p2p.manager import USER_AGENT, PeerManager, parse_target
from miner.node.rpc.protocol import RPC_INVALID_PARAMETER, Param, RpcError
from miner.node.rpc.registry import Context, rpc
from miner.primitives import p2p

RPC_CLIENT_NODE_ALREADY_ADDED = -23
RPC_CLIENT_NODE_NOT_ADDED = -24
RPC_CLIENT_NODE_NOT_CONNECTED = -29
RPC_CLIENT_INVALID_IP_OR_SUBNET = -30
RPC_CLIENT_P2P_DISABLED = -31


def _manager(ctx: Context) -> PeerManager:
    if ctx.p2p is None:
        raise RpcError(RPC_CLIENT_P2P_DISABLED, "Error: Peer-to-peer functionality missing or disabled")
    return ctx.p2p


@rpc("getpeerinfo")
async def getpeerinfo(ctx: Context) -> list:
    return ctx.p2p.peer_info() if ctx.p2p is not None else []


@rpc("getconnectioncount")
async def getconnectioncount(ctx: Context) -> int:
    return len(ctx.p2p.peers) if ctx.p2p is not None else 0  # every connection, as Core counts


@rpc("getnetworkinfo")
async def getnetworkinfo(ctx: Context) -> dict:
    peers = ctx.p2p.peer_info() if ctx.p2p is not None else []
    inbound = sum(1 for p in peers if p["inbound"])
    return {
        "version": 10000, "subversion": USER_AGENT, "protocolversion": p2p.PROTOCOL_VERSION,
        "localservices": f"{p2p.OUR_SERVICES:016x}", "localservicesnames": ["NETWORK", "WITNESS"],
        "localrelay": False, "timeoffset": 0, "networkactive": ctx.p2p is not None,
        "connections": len(peers), "connections_in": inbound, "connections_out": len(peers) - inbound,
        "networks": [{"name": "ipv4", "limited": False, "reachable": True, "proxy": "",
                      "proxy_randomize_credentials": False}],
        "relayfee": 0.00001, "incrementalfee": 0.00001,
        "localaddresses": ([{"address": "127.0.0.1", "port": ctx.p2p.port, "score": 1}]
                           if ctx.p2p is not None and ctx.p2p.port else []),
        "warnings": [],
    }


@rpc("addnode", Param("node", "string", True), Param("command", "string", True))
async def addnode(ctx: Context, node: str, command: str) -> None:
    manager = _manager(ctx)
    if command not in ("add", "remove", "onetry"):
        raise RpcError(RPC_INVALID_PARAMETER, "Error: Invalid command; use add, remove or onetry")
    try:
        host, port = parse_target(node)
    except InvalidInput as exc:
        raise RpcError(RPC_INVALID_PARAMETER, str(exc)) from None
    key = f"{host}:{port}"
    if command == "onetry":
        manager.add_target(host, port, once=True)
    elif command == "add":
        if key in manager.targets:
            raise RpcError(RPC_CLIENT_NODE_ALREADY_ADDED, "Error: Node already added")
        manager.add_target(host, port)
    elif not manager.remove_target(key):
        raise RpcError(RPC_CLIENT_NODE_NOT_ADDED, "Error: Node could not be removed. It has not been added previously.")


@rpc("disconnectnode", Param("address", "string", default=""), Param("nodeid", "number"))
async def disconnectnode(ctx: Context, address: str, nodeid: int | None) -> None:
    manager = _manager(ctx)
    if address and nodeid is not None:
        raise RpcError(RPC_INVALID_PARAMETER, "Only one of address and nodeid should be provided.")
    if nodeid is not None:
        found = manager.disconnect(lambda p: p.id == nodeid)
    elif address:
        found = manager.disconnect(lambda p: p.addr == address)
    else:
        raise RpcError(RPC_INVALID_PARAMETER, "Only one of address and nodeid should be provided.")
    if not found:
        raise RpcError(RPC_CLIENT_NODE_NOT_CONNECTED, "Node not found in connected nodes")


@rpc("setban", Param("subnet", "string", True), Param("command", "string", True),
     Param("bantime", "number", default=0), Param("absolute", "bool", default=False))
async def setban(ctx: Context, subnet: str, command: str, bantime: int, absolute: bool) -> None:
    manager = _manager(ctx)
    if command not in ("add", "remove"):
        raise RpcError(RPC_INVALID_PARAMETER, "Error: Invalid command; use add or remove")
    try:
        net = normalize_subnet(subnet)
    except InvalidInput:
        raise RpcError(RPC_CLIENT_INVALID_IP_OR_SUBNET, "Error: Invalid IP/Subnet") from None
    if command == "add":
        if absolute and bantime and bantime < time.time():
            raise RpcError(RPC_INVALID_PARAMETER, "Error: Absolute timestamp is in the past")
        if str(net) in manager.bans.bans:
            raise RpcError(RPC_CLIENT_NODE_ALREADY_ADDED, "Error: IP/Subnet already banned")
        manager.bans.ban(str(net), int(bantime) or DEFAULT_BAN_TIME, absolute and bantime > 0, "setban")
        manager.disconnect(lambda p: manager.bans.is_banned(p.host))
    elif not manager.bans.unban(str(net)):
        raise RpcError(RPC_CLIENT_INVALID_IP_OR_SUBNET,
                       "Error: Unban failed. Requested address/subnet was not previously manually banned.")


@rpc("listbanned")
async def listbanned(ctx: Context) -> list:
    return ctx.p2p.bans.listed() if ctx.p2p is not None else []


@rpc("clearbanned")
async def clearbanned(ctx: Context) -> None:
    _manager(ctx).bans.clear()
