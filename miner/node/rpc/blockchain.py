"""Chain reads over RPC: Core's blockchain methods and their result shapes."""

from __future__ import annotations

from typing import Any

from miner.chain.chain import Chain
from miner.chain.index import Node
from miner.consensus.checks import median_time_past
from miner.node.rpc.protocol import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    Param,
    RpcError,
    as_int,
)
from miner.node.rpc.registry import Context, parse_hash, rpc
from miner.node.rpc.txjson import tx_json
from miner.node.template import tip_difficulty
from miner.primitives.block import Block
from miner.primitives.compact import bits_to_target, difficulty
from miner.primitives.hashes import display_hex


def _stored(chain: Chain, block_hash: bytes) -> tuple[Node, Block]:
    node = chain.node(block_hash)
    if node is None:
        raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
    return node, chain.block_by_hash(block_hash)


def _header_json(chain: Chain, node: Node, block: Block) -> dict:
    header = block.header
    active = chain.is_active(node.hash)
    times, _ = chain.history(node.hash)
    out = {
        "hash": display_hex(node.hash),
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
        out["nextblockhash"] = display_hex(chain.hash_at(node.height + 1))
    return out


def _block_json(chain: Chain, block_hash: bytes, verbosity: int) -> Any:
    node, block = _stored(chain, block_hash)
    raw = block.serialize()
    if verbosity == 0:
        return raw.hex()
    out = _header_json(chain, node, block)
    out.update(strippedsize=block.base_size, size=len(raw), weight=block.weight)
    if verbosity == 1:
        out["tx"] = [display_hex(t.txid) for t in block.txs]
    else:  # each transaction decoded, inputs and outputs included, as Core's verbosity 2
        mainnet = chain.params.name == "mainnet"
        out["tx"] = [tx_json(t, mainnet) for t in block.txs]
    return out


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
        return chain.hash_at(height)
    return display_hex(await ctx.service.on_chain(read))


@rpc("getblockheader", Param("blockhash", "string", True), Param("verbose", "bool", default=True))
async def getblockheader(ctx: Context, blockhash: str, verbose: bool) -> Any:
    h = parse_hash(blockhash, "hash")
    def read(chain: Chain) -> Any:
        node, block = _stored(chain, h)
        return _header_json(chain, node, block) if verbose else block.header.hex()
    return await ctx.service.on_chain(read)


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
    rows = [{"height": t.height, "hash": display_hex(t.hash), "branchlen": t.branch_length,
             "status": t.status} for t in tips]
    if ctx.p2p is not None:  # branches known from peers by their headers, bodies not (yet) here
        rows[1:] = sorted(rows[1:] + await ctx.p2p.sync.headers_only_tips(),
                          key=lambda r: (-r["height"], r["hash"]))
    return rows


@rpc("getblockchaininfo")
async def getblockchaininfo(ctx: Context) -> dict:
    tip = ctx.service.tip
    def size(chain: Chain) -> int:
        try:
            return chain.path.stat().st_size
        except OSError:
            return 0
    headers = max(tip.height, ctx.p2p.sync.best_header_height() if ctx.p2p is not None else -1)
    return {"chain": tip.chain_name, "blocks": tip.height, "headers": headers,
            "bestblockhash": display_hex(tip.hash), "bits": f"{tip.bits:08x}",
            "target": f"{bits_to_target(tip.bits):064x}",
            "difficulty": tip_difficulty(tip), "time": tip.time,
            "mediantime": tip.median_time, "verificationprogress": 1.0,
            "initialblockdownload": False, "chainwork": f"{tip.chainwork:064x}",
            "size_on_disk": await ctx.service.on_chain(size), "pruned": False, "warnings": []}


