"""The RPC methods `miner node` serves: Bitcoin Core's names, parameters, result shapes and errors.

Each method declares its parameters (positional or named, as Core's `RPCHelpMan` does), reads
the chain on the chain thread and answers what Core would answer for the same chain. Where this
chain has less than Core (no coin set, so no fees; no peers), the field is kept with the value
that is true here (fee 0, no connections).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from ..chain import Chain, median_time_past
from ..errors import ChainError, MinerError, UsageError
from ..header import bits_to_target, difficulty, display_hex
from ..tx import txid, varint
from ..wire import Block, DecodeError, Transaction, serialize_block
from .mempool import MempoolRejected
from .rpc import (RPC_DESERIALIZATION_ERROR, RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER,
                  RPC_METHOD_NOT_FOUND, RPC_MISC_ERROR, RPC_TYPE_ERROR, RPC_VERIFY_REJECTED, Param, RpcError,
                  as_int, bind)
from .service import NodeService
from .template import tip_difficulty

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


async def dispatch(ctx: Context, method: str, params: list | dict) -> Any:
    m = METHODS.get(method)
    if m is None:
        raise RpcError(RPC_METHOD_NOT_FOUND, "Method not found")
    values = bind(method, m.params, params, m.usage)
    try:
        return await m.handler(ctx, *values)
    except RpcError:
        raise
    except ChainError as exc:  # the chain file failed under us (disk full): say so, keep serving
        raise RpcError(RPC_MISC_ERROR, str(exc)) from None


# --------------------------------------------------------------------------- argument helpers

def parse_hash(value: str, name: str) -> bytes:
    """Core's ParseHashV: 64 hex digits, shown order."""
    if len(value) != 64:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(value)}, for '{value[:100]}')")
    try:
        return bytes.fromhex(value)[::-1]
    except ValueError:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{value[:100]}')") from None


def _hex_bytes(value: str) -> bytes | None:
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


# --------------------------------------------------------------------------- chain reads

def _header_json(chain: Chain, block_hash: bytes) -> dict:
    node = chain.node(block_hash)
    if node is None:
        raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
    block = chain.block_by_hash(block_hash)
    header = block.header
    active = chain.is_active(block_hash)
    times, _ = chain.tree.history(node)
    out = {
        "hash": display_hex(block_hash),
        "confirmations": chain.height - node.height + 1 if active else -1,
        "height": node.height,
        "version": header.version,
        "versionHex": f"{header.version & 0xFFFFFFFF:08x}",
        "merkleroot": display_hex(header.merkle_root),
        "time": header.time,
        "mediantime": median_time_past(times, node.height + 1),
        "nonce": header.nonce,
        "bits": f"{header.bits:08x}",
        "target": f"{bits_to_target(header.bits):064x}",
        "difficulty": difficulty(bits_to_target(header.bits)),
        "chainwork": f"{node.chainwork:064x}",
        "nTx": len(block.txs),
    }
    if node.height > 0:
        out["previousblockhash"] = display_hex(header.prev_hash)
    if active and node.height < chain.height:
        out["nextblockhash"] = display_hex(chain.tree.active[node.height + 1])
    return out


def _block_json(chain: Chain, block_hash: bytes, verbosity: int) -> Any:
    out = _header_json(chain, block_hash)
    block = chain.block_by_hash(block_hash)
    raw = serialize_block(block.header, block.txs)
    if verbosity == 0:
        return raw.hex()
    parsed = []
    for t in block.txs:
        try:
            parsed.append(Transaction.parse(t))
        except DecodeError:
            parsed.append(None)  # a local chain's body is opaque bytes: serve its txid anyway
    stripped = 80 + len(varint(len(block.txs))) + sum(p.base_size if p else len(t)
                                                      for p, t in zip(parsed, block.txs))
    out.update(strippedsize=stripped, size=len(raw), weight=stripped * 3 + len(raw))
    if verbosity == 1:
        out["tx"] = [display_hex(txid(t)) for t in block.txs]
    else:
        out["tx"] = [_tx_json(t, p) for t, p in zip(block.txs, parsed)]
    return out


def _tx_json(raw: bytes, tx: Transaction | None) -> dict:
    if tx is None:
        return {"txid": display_hex(txid(raw)), "hash": display_hex(txid(raw)), "size": len(raw),
                "hex": raw.hex()}
    return {"txid": display_hex(tx.txid), "hash": display_hex(tx.wtxid), "version": tx.version,
            "size": len(raw), "vsize": (tx.weight + 3) // 4, "weight": tx.weight,
            "locktime": tx.locktime, "hex": raw.hex()}


def _network_hashps(chain: Chain, lookup: int, height: int) -> float:
    """Core's GetNetworkHashPS: work over time of the last `lookup` blocks up to `height`."""
    if height < 0 or height > chain.height:
        height = chain.height
    if lookup <= 0:
        lookup = height % 2016 + 1  # since the last difficulty change, as Core does
    lookup = min(lookup, height)
    if height == 0 or lookup == 0:
        return 0
    times = chain.times[height - lookup:height + 1]
    spread = max(times) - min(times)
    if spread == 0:
        return 0
    work = chain.tree.works[height] - chain.tree.works[height - lookup]
    return work / spread


# --------------------------------------------------------------------------- blockchain

@rpc("getblockcount")
async def getblockcount(ctx: Context) -> int:
    return ctx.service.tip.height


@rpc("getbestblockhash")
async def getbestblockhash(ctx: Context) -> str:
    return display_hex(ctx.service.tip.hash)


@rpc("getblockhash", Param("height", "number", True))
async def getblockhash(ctx: Context, height: Any) -> str:
    height = as_int(height, "height")
    def read(chain: Chain) -> bytes:
        if not 0 <= height <= chain.height:
            raise RpcError(RPC_INVALID_PARAMETER, "Block height out of range")
        return chain.tree.active[height]
    return display_hex(await ctx.service.on_chain(read))


@rpc("getblockheader", Param("blockhash", "string", True), Param("verbose", "bool", default=True))
async def getblockheader(ctx: Context, blockhash: str, verbose: bool) -> Any:
    h = parse_hash(blockhash, "hash")
    if verbose:
        return await ctx.service.on_chain(_header_json, h)
    def raw(chain: Chain) -> str:
        if chain.node(h) is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
        return chain.block_by_hash(h).header.hex()
    return await ctx.service.on_chain(raw)


@rpc("getblock", Param("blockhash", "string", True), Param("verbosity", "any", default=1))
async def getblock(ctx: Context, blockhash: str, verbosity: Any) -> Any:
    h = parse_hash(blockhash, "blockhash")
    if isinstance(verbosity, bool):  # Core still takes the old boolean form
        verbosity = 1 if verbosity else 0
    if not isinstance(verbosity, int) or not 0 <= verbosity <= 3:
        raise RpcError(RPC_INVALID_PARAMETER, "Verbosity must be in range 0 .. 3")
    return await ctx.service.on_chain(_block_json, h, min(verbosity, 2))


@rpc("getdifficulty")
async def getdifficulty(ctx: Context) -> float:
    return tip_difficulty(ctx.service.tip)


@rpc("getchaintips")
async def getchaintips(ctx: Context) -> list:
    tips = await ctx.service.on_chain(Chain.tips)
    return [{"height": t.height, "hash": display_hex(t.hash), "branchlen": t.branch_length,
             "status": t.status} for t in tips]


@rpc("getblockchaininfo")
async def getblockchaininfo(ctx: Context) -> dict:
    tip = ctx.service.tip
    def size(chain: Chain) -> int:
        try:
            return chain.path.stat().st_size
        except OSError:
            return 0
    return {"chain": tip.chain_name, "blocks": tip.height, "headers": tip.height,
            "bestblockhash": display_hex(tip.hash), "bits": f"{tip.bits:08x}",
            "target": f"{bits_to_target(tip.bits):064x}",
            "difficulty": tip_difficulty(tip), "time": tip.time,
            "mediantime": tip.median_time, "verificationprogress": 1.0,
            "initialblockdownload": False, "chainwork": f"{tip.chainwork:064x}",
            "size_on_disk": await ctx.service.on_chain(size), "pruned": False, "warnings": []}


@rpc("getnetworkhashps", Param("nblocks", "number", default=120), Param("height", "number", default=-1))
async def getnetworkhashps(ctx: Context, nblocks: Any, height: Any) -> float:
    return await ctx.service.on_chain(_network_hashps, as_int(nblocks, "nblocks"), as_int(height, "height"))


@rpc("getmininginfo")
async def getmininginfo(ctx: Context) -> dict:
    tip = ctx.service.tip
    return {"blocks": tip.height, "bits": f"{tip.next_bits:08x}",
            "difficulty": tip_difficulty(tip),
            "target": f"{tip.next_target:064x}",
            "networkhashps": await ctx.service.on_chain(_network_hashps, 120, -1),
            "pooledtx": len(ctx.service.mempool), "chain": tip.chain_name, "warnings": []}


# --------------------------------------------------------------------------- mining

@rpc("getblocktemplate", Param("template_request", "object", default=None))
async def getblocktemplate(ctx: Context, request: dict | None) -> dict | str | None:
    request = request or {}
    mode = request.get("mode", "template")
    if mode == "proposal":
        data = request.get("data")
        if not isinstance(data, str):
            raise RpcError(RPC_TYPE_ERROR, "Missing data String key for proposal")
        return await ctx.service.propose_block(_decode_block(data))
    if mode != "template":
        raise RpcError(RPC_INVALID_PARAMETER, "Invalid mode")
    rules = request.get("rules")
    if not isinstance(rules, list) or "segwit" not in rules:
        raise RpcError(RPC_INVALID_PARAMETER, 'getblocktemplate must be called with the segwit rule set '
                                              '(call with {"rules": ["segwit"]})')
    lpid = request.get("longpollid")
    if lpid is not None:
        if not isinstance(lpid, str):
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid longpollid")  # Core: a type error; the code is what clients read
        await ctx.service.wait_for_change(lpid)
        if ctx.service.closing:
            raise RpcError(RPC_MISC_ERROR, "Shutting down")
    return ctx.service.template()


def _decode_block(hexdata: str) -> Block:
    """A block from submitblock's or a proposal's hex, with Core's error for what does not decode."""
    raw = _hex_bytes(hexdata)
    if raw is None:
        raise RpcError(RPC_DESERIALIZATION_ERROR, "Block decode failed")
    try:
        block = Block.parse(raw)
    except (DecodeError, UsageError):
        raise RpcError(RPC_DESERIALIZATION_ERROR, "Block decode failed") from None
    if not block.txs or not block.txs[0].is_coinbase:
        raise RpcError(RPC_DESERIALIZATION_ERROR, "Block does not start with a coinbase")
    return block


@rpc("submitblock", Param("hexdata", "string", True), Param("dummy", "any"))
async def submitblock(ctx: Context, hexdata: str, dummy: Any) -> str | None:
    return await ctx.service.submit_block(_decode_block(hexdata))


@rpc("generatetoaddress", Param("nblocks", "number", True), Param("address", "string", True),
     Param("maxtries", "number", default=1_000_000))
async def generatetoaddress(ctx: Context, nblocks: Any, address: str, maxtries: Any) -> list[str]:
    from ..address import script_for_address
    nblocks, maxtries = as_int(nblocks, "nblocks"), as_int(maxtries, "maxtries")
    if nblocks < 0 or maxtries < 0:
        raise RpcError(RPC_INVALID_PARAMETER, "nblocks and maxtries must not be negative")
    try:
        script = script_for_address(address)
    except UsageError:
        raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from None
    if ctx.generate is None:
        raise RpcError(RPC_METHOD_NOT_FOUND, "Method not found")
    try:
        return await ctx.generate(nblocks, script, maxtries)
    except MinerError as exc:
        raise RpcError(RPC_MISC_ERROR, str(exc)) from None


# --------------------------------------------------------------------------- transactions

@rpc("sendrawtransaction", Param("hexstring", "string", True), Param("maxfeerate", "any"),
     Param("maxburnamount", "any"))
async def sendrawtransaction(ctx: Context, hexstring: str, maxfeerate: Any, maxburnamount: Any) -> str:
    raw = _hex_bytes(hexstring)
    try:
        if raw is None:
            raise DecodeError("not hex")
        tx = Transaction.parse(raw)
    except DecodeError:
        raise RpcError(RPC_DESERIALIZATION_ERROR,
                       "TX decode failed. Make sure the tx has at least one input.") from None
    try:
        await ctx.service.add_transaction(tx)
    except MempoolRejected as exc:
        raise RpcError(RPC_VERIFY_REJECTED, exc.reason) from None
    return display_hex(tx.txid)


@rpc("getrawmempool", Param("verbose", "bool", default=False), Param("mempool_sequence", "bool", default=False))
async def getrawmempool(ctx: Context, verbose: bool, mempool_sequence: bool) -> Any:
    pool = ctx.service.mempool
    if not verbose:
        ids = [display_hex(t) for t in pool.entries]
        return {"txids": ids, "mempool_sequence": pool.sequence} if mempool_sequence else ids
    out = {}
    for t, entry in pool.entries.items():
        depends = [display_hex(i.prev_hash) for i in entry.tx.inputs if i.prev_hash in pool.entries]
        out[display_hex(t)] = {"vsize": (entry.tx.weight + 3) // 4, "weight": entry.tx.weight,
                               "time": entry.time, "height": entry.height,
                               "wtxid": display_hex(entry.tx.wtxid),
                               "fees": {"base": 0.0, "modified": 0.0, "ancestor": 0.0, "descendant": 0.0},
                               "depends": depends}
    return out


# --------------------------------------------------------------------------- control

@rpc("stop")
async def stop(ctx: Context) -> str:
    asyncio.get_running_loop().call_soon(ctx.stop)
    return "miner node stopping"


@rpc("uptime")
async def uptime(ctx: Context) -> int:
    return int(time.time() - ctx.service.started)


@rpc("help", Param("command", "string"))
async def help_(ctx: Context, command: str | None) -> str:
    if command is None:
        return "\n".join(m.usage for _, m in sorted(METHODS.items()))
    m = METHODS.get(command)
    return m.usage if m else f"help: unknown command: {command}"
