"""Mining over RPC: getblocktemplate (BIP 22/23, long poll, proposals), submitblock (BIP 22
answers), generatetoaddress, the mining figures, and the Stratum pool's (getstratuminfo, this
node's own: Core has no pool)."""

from __future__ import annotations

import logging
from typing import Any

from miner.chain.chain import Chain
from miner.chain.outcome import BlockOutcome, BlockResult
from miner.errors import InvalidInput, MinerError
from miner.node.rpc.protocol import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_TYPE_ERROR,
    Param,
    RpcError,
    as_int,
)
from miner.node.rpc.registry import Context, hex_bytes, rpc
from miner.node.template import tip_difficulty
from miner.primitives.address import script_for_address
from miner.primitives.block import Block
from miner.primitives.compact import bits_to_target, difficulty, work
from miner.primitives.serialize import DecodeError
from miner.primitives.witness import find_commitment, with_reserved_value

log = logging.getLogger(__name__)


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
    work = chain.chainwork_at(height) - chain.chainwork_at(height - lookup)
    return work / spread


@rpc("getnetworkhashps", Param("nblocks", "number", default=120), Param("height", "number", default=-1))
async def getnetworkhashps(ctx: Context, nblocks: Any, height: Any) -> float:
    return await ctx.service.on_chain(_network_hashps, as_int(nblocks, "nblocks"), as_int(height, "height"))


@rpc("getmininginfo")
async def getmininginfo(ctx: Context) -> dict:
    """As Core (28 and later) answers it: `bits`, `difficulty` and `target` are the tip's, and
    the next block's are under `next`."""
    tip = ctx.service.tip
    return {"blocks": tip.height, "bits": f"{tip.bits:08x}",
            "difficulty": tip_difficulty(tip),
            "target": f"{bits_to_target(tip.bits):064x}",
            "next": {"height": tip.height + 1, "bits": f"{tip.next_bits:08x}",
                     "difficulty": difficulty(tip.next_target), "target": f"{tip.next_target:064x}"},
            "networkhashps": await ctx.service.on_chain(_network_hashps, 120, -1),
            "pooledtx": len(ctx.service.mempool), "chain": tip.chain_name, "warnings": []}


@rpc("getblocktemplate", Param("template_request", "object", default=None))
async def getblocktemplate(ctx: Context, request: dict | None) -> dict | str | None:
    request = request or {}
    mode = request.get("mode", "template")
    if mode == "proposal":
        data = request.get("data")
        if not isinstance(data, str):
            raise RpcError(RPC_TYPE_ERROR, "Missing data String key for proposal")
        # Core's proposal path has no coinbase pre-check: TestBlockValidity answers bad-cb-missing
        return await ctx.service.propose_block(_decode_block(data, require_coinbase=False))
    if mode != "template":
        raise RpcError(RPC_INVALID_PARAMETER, "Invalid mode")
    rules = request.get("rules")
    if not isinstance(rules, list) or "segwit" not in rules:
        raise RpcError(RPC_INVALID_PARAMETER, 'getblocktemplate must be called with the segwit rule set '
                                              '(call with {"rules": ["segwit"]})')
    lpid = request.get("longpollid")
    if lpid is not None:
        if not isinstance(lpid, str):
            # Core: a type error; the code is what clients read
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid longpollid")
        await ctx.service.wait_for_change(lpid)
        if ctx.service.closing:
            raise RpcError(RPC_MISC_ERROR, "Shutting down")
    return ctx.service.template()


def _decode_block(hexdata: str, require_coinbase: bool = True) -> Block:
    """A block from submitblock's or a proposal's hex, with Core's error for what does not decode
    (and, for submitblock, for a block that does not start with a coinbase)."""
    raw = hex_bytes(hexdata)
    if raw is None:
        raise RpcError(RPC_DESERIALIZATION_ERROR, "Block decode failed")
    try:
        block = Block.parse(raw)
    except (DecodeError, InvalidInput):
        raise RpcError(RPC_DESERIALIZATION_ERROR, "Block decode failed") from None
    if require_coinbase and (not block.txs or not block.txs[0].is_coinbase):
        raise RpcError(RPC_DESERIALIZATION_ERROR, "Block does not start with a coinbase")
    return block


def fill_witness_nonce(block: Block) -> Block:
    """Bitcoin Core's UpdateUncommittedBlockStructures, which its submitblock applies: a block
    whose coinbase commits to its witnesses (BIP 141) but carries no witness gets the 32 zero
    bytes of the witness reserved value as that witness. Miners that build the coinbase from a
    template (pooler's cpuminer, cpuminer-opt) add the commitment output and submit the coinbase
    in its legacy form; Core accepts their blocks, so must this node. Nothing else changes: the
    witness is not part of the txid, so the merkle root and the block's id stay as they were.
    A proposal (BIP 23) is judged as sent, as Core judges it."""
    coinbase = block.txs[0]
    if coinbase.has_witness or find_commitment(coinbase) is None:
        return block
    return Block(block.header, (with_reserved_value(coinbase), *block.txs[1:]))


@rpc("submitblock", Param("hexdata", "string", True), Param("dummy", "any"))
async def submitblock(ctx: Context, hexdata: str, dummy: Any) -> str | None:
    return bip22_answer(await ctx.service.submit_block(fill_witness_nonce(_decode_block(hexdata))))


def bip22_answer(outcome: BlockOutcome) -> str | None:
    """submitblock's answer (BIP 22, as Core gives it): null for a block that became the tip,
    "inconclusive" for one stored on a side branch, "duplicate" for one stored before, else the
    reject reason."""
    if outcome.result is BlockResult.CONNECTED:
        return None
    if outcome.result is BlockResult.SIDE:
        return "inconclusive"
    if outcome.result is BlockResult.DUPLICATE:
        return "duplicate"
    return outcome.reason


@rpc("generatetoaddress", Param("nblocks", "number", True), Param("address", "string", True),
     Param("maxtries", "number", default=1_000_000))
async def generatetoaddress(ctx: Context, nblocks: Any, address: str, maxtries: Any) -> list[str]:
    nblocks, maxtries = as_int(nblocks, "nblocks"), as_int(maxtries, "maxtries")
    if nblocks < 0 or maxtries < 0:
        raise RpcError(RPC_INVALID_PARAMETER, "nblocks and maxtries must not be negative")
    try:
        script = script_for_address(address)
    except InvalidInput:
        raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from None
    if ctx.generate is None:
        raise RpcError(RPC_METHOD_NOT_FOUND, "Method not found")
    try:
        hashes = await ctx.generate(nblocks, script, maxtries)
    except MinerError as exc:
        raise RpcError(RPC_MISC_ERROR, str(exc)) from None
    if len(hashes) < nblocks and not ctx.service.closing:
        # Core answers what it found, [] included, and says nothing; the node's log says why, so
        # an operator whose chain needs millions of hashes a block learns what maxtries to pass.
        log.warning("generatetoaddress: maxtries (%s) ran out after %d of %d blocks; a block here "
                    "takes about %s hashes", f"{maxtries:,}", len(hashes), nblocks,
                    f"{work(ctx.service.tip.next_target):,}")
    return hashes




@rpc("getstratuminfo")
async def getstratuminfo(ctx: Context) -> dict:
    """The pool's connections, shares by verdict, blocks, best share, and per worker: difficulty,
    shares, best share and hash rate estimated from accepted shares over 1, 5 and 15 minutes."""
    if ctx.stratum is None:
        raise RpcError(RPC_MISC_ERROR, "Stratum is not served: start the node with --stratum-port")
    return ctx.stratum.report()
