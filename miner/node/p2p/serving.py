"""The node as a server of its chain to peers: answers to `getheaders` and `getdata`.

Blocks are served one at a time, each only once the peer has taken the one before it (the send
waits for the socket's buffer to drain, as Core pauses serving while a peer's send buffer is
full), so a peer that asks for many and reads slowly holds one block of our memory, not all.
"""

from __future__ import annotations

import contextlib

from miner.chain.chain import Chain
from miner.chain.locator import headers_after
from miner.errors import InvalidInput
from miner.node.p2p.peer import Misbehaving, Peer
from miner.node.service import NodeService
from miner.primitives import p2p
from miner.primitives.serialize import varint
from miner.primitives.transaction import strip_witness


async def serve_headers(service: NodeService, peer: Peer, ask: p2p.GetHeaders) -> None:
    headers = await service.on_chain(headers_after, ask.locator, ask.stop, p2p.MAX_HEADERS)
    peer.known.update(h.hash() for h in headers[-1:])
    await peer.send("headers", p2p.headers_payload(headers))


async def serve_blocks(service: NodeService, peer: Peer, items: list[p2p.Inventory]) -> None:
    """Each block asked for, in order, or `notfound` for those we do not have. A getdata that
    names a block twice is misbehaviour, refused before anything is served: no peer needs a
    block twice in one message, and one 1.8 MB getdata naming a 1 MB block 50,000 times made
    the node send 7.7 GB in a minute."""
    repeated = len(items) - len({i.hash for i in items})
    if repeated:
        raise Misbehaving(f"getdata names {repeated} of its {len(items)} items more than once")
    missing = []
    for item in items:
        block = None
        if item.is_block:
            with contextlib.suppress(InvalidInput):
                block = await service.on_chain(Chain.block_by_hash, item.hash)
        if block is None:
            missing.append(item)
            continue
        if item.type & p2p.MSG_WITNESS_FLAG:
            raw = block.serialize()
        else:
            raw = block.header.serialize() + varint(len(block.txs)) + b"".join(
                strip_witness(t.raw) for t in block.txs)
        peer.known.add(item.hash)
        await peer.send("block", raw)
    if missing:
        await peer.send("notfound", p2p.inv_payload(missing))
