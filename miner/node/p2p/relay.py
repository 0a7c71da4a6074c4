"""Relay: every block that becomes our tip is announced once to each peer that does not have it.

A tip change is announced by one task that always sends the latest, so a batch of blocks
stored during a sync is one announcement, not hundreds. A peer gets the header (BIP 130) when
it asked for headers and has the parent, an `inv` otherwise (it then asks for headers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from miner.chain.locator import header_of
from miner.node.p2p.peer import Peer
from miner.node.service import Accepted, NodeService
from miner.primitives import p2p
from miner.primitives.header import BlockHeader


class Relay:
    def __init__(self, service: NodeService, peers: dict[int, Peer],
                 best_of: Callable[[int], tuple[bytes | None, int]],
                 send_soon: Callable[[Peer, str, bytes], None],
                 spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task]):
        self.service, self.peers, self._best_of = service, peers, best_of
        self._send_soon, self._spawn = send_soon, spawn
        self._to_announce: bytes | None = None
        self._announcer: asyncio.Task | None = None
        self.closing = False

    def on_accepted(self, accepted: Accepted) -> None:
        self._to_announce = accepted.hash
        if not self.closing and (self._announcer is None or self._announcer.done()):
            self._announcer = self._spawn(self._announce_latest())

    async def _announce_latest(self) -> None:
        while self._to_announce is not None:
            block_hash, self._to_announce = self._to_announce, None
            header = await self.service.on_chain(header_of, block_hash)
            if header is not None:
                self.announce(block_hash, header)

    def announce(self, block_hash: bytes, header: BlockHeader) -> None:
        """Once to each peer that does not have it: its header to a peer that asked for headers
        (BIP 130) and has the parent, an inv otherwise (the peer then asks for headers)."""
        for peer in list(self.peers.values()):
            if not peer.ready or block_hash in peer.known:
                continue
            parent_known = header.prev_hash in peer.known or header.prev_hash == self._best_of(peer.id)[0]
            peer.known.add(block_hash)
            if peer.send_headers and parent_known:
                self._send_soon(peer, "headers", p2p.headers_payload([header]))
            else:
                self._send_soon(peer, "inv", p2p.inv_payload([p2p.Inventory(p2p.MSG_BLOCK, block_hash)]))
