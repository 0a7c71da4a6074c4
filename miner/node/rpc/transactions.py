"""Transactions over RPC: sendrawtransaction into the mempool, getrawmempool."""

from __future__ import annotations

from typing import Any

from miner.node.mempool import MempoolRejected
from miner.node.rpc.protocol import (
    RPC_DESERIALIZATION_ERROR,
    RPC_VERIFY_REJECTED,
    Param,
    RpcError,
)
from miner.node.rpc.registry import Context, hex_bytes, rpc
from miner.primitives.hashes import display_hex
from miner.primitives.serialize import DecodeError
from miner.primitives.transaction import Transaction


@rpc("sendrawtransaction", Param("hexstring", "string", True), Param("maxfeerate", "any"),
     Param("maxburnamount", "any"))
async def sendrawtransaction(ctx: Context, hexstring: str, maxfeerate: Any, maxburnamount: Any) -> str:
    raw = hex_bytes(hexstring)
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


