"""Headers-first sync: headers checked and held as they arrive, the blocks on the way to the
most-work header fetched from the peers that have them, and each block stored by the chain.

Headers are checked on their own (they link, each meets its proof of work) and held in a
`HeaderTree`; the path from the chain's blocks to the most-work held header is the download
plan. Peers are asked for at most `MAX_IN_FLIGHT` blocks each, the least busy first, and only
for blocks they told us of; a peer that keeps one past `STALL_TIMEOUT` is dropped (by the
manager's housekeeping) and its blocks go to others. A block that arrives before its parent
waits, bounded, and follows its parent into the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from miner.chain.chain import Chain
from miner.chain.locator import locator
from miner.consensus.checks import check_header
from miner.consensus.params import ChainParams
from miner.consensus.pow import proof_of_work_error
from miner.errors import InvalidBlock
from miner.node.p2p.headers import Anchor, HeadersFull, HeaderTree
from miner.node.p2p.peer import Misbehaving, Peer, PeerGone
from miner.node.service import NodeService
from miner.primitives import p2p
from miner.primitives.block import Block
from miner.primitives.hashes import display_hex
from miner.primitives.header import BlockHeader

MAX_IN_FLIGHT = 16  # Core's MAX_BLOCKS_IN_TRANSIT_PER_PEER
STALL_TIMEOUT = 10.0  # s a requested block may take before its peer is dropped
MAX_BUFFERED = 1024  # blocks received before their parent, and blocks waiting to be stored
MAX_BATCH = 256  # blocks stored in one transaction during a sync
MAX_UNCONNECTING = 10  # Core's MAX_NUM_UNCONNECTING_HEADERS_MSGS


def _history(chain: Chain, block_hash: bytes) -> tuple[list[int], list[int]]:
    """Times and bits by height up to a stored block, copied off the chain thread's lists."""
    times, bits = chain.tree.history(chain.tree.nodes[block_hash])
    return list(times), list(bits)


def _anchors(chain: Chain, hashes: list[bytes]) -> dict[bytes, Anchor]:
    out = {}
    for h in hashes:
        node = chain.tree.nodes.get(h)
        if node is not None:
            out[h] = Anchor(node.height, node.chainwork, node.valid)
    return out


class BlockSync:
    def __init__(self, service: NodeService, params: ChainParams, peers: dict[int, Peer],
                 spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task],
                 punish: Callable[[Peer, str], None]):
        self.service, self.params, self.peers = service, params, peers
        self.rule = params.retarget_rule()
        self._spawn, self._punish = spawn, punish
        self.headers = HeaderTree()
        self.in_flight: dict[bytes, int] = {}  # block hash -> peer id
        self.buffered: dict[bytes, list[tuple[Block, int]]] = {}  # parent hash -> blocks waiting
        self._buffered_count = 0
        self._plan: list[bytes] = []
        self._plan_best: bytes | None = None
        self._plan_pos = 0
        self._arrived: list[tuple[Block, int]] = []  # blocks to store, with the peer that sent each
        self._storer: asyncio.Task | None = None
        self._pending: set[bytes] = set()  # arrived, not yet stored: never asked for again meanwhile

    async def headers_only_tips(self) -> list[dict]:
        """getchaintips' rows for held headers no held header builds on (Core's `headers-only`):
        height, hash and the length of the branch from the active chain."""
        rows = []
        for tip in self.headers.tips():
            path = self.headers.path_to(tip)
            rows.append((tip, path[0].parent, len(path)))
        if not rows:
            return []

        def forks(chain: Chain) -> dict[bytes, int]:
            out = {}
            for _, parent, _ in rows:
                node = chain.tree.nodes.get(parent)
                if node is not None:
                    out[parent] = len(chain.tree.branch(node))
            return out
        stored_branch = await self.service.on_chain(forks)
        return [{"height": tip.height, "hash": display_hex(tip.hash),
                 "branchlen": held + stored_branch.get(parent, 0), "status": "headers-only"}
                for tip, parent, held in rows]

    def best_header_height(self) -> int:
        best = self.headers.best()
        return best.height if best is not None else -1

    def release(self, peer: Peer) -> None:
        """A peer left: its blocks in flight are free for others."""
        for h in peer.in_flight:
            if self.in_flight.get(h) == peer.id:
                del self.in_flight[h]
        peer.in_flight.clear()

    def stalled(self, peer: Peer, now: float) -> bool:
        return bool(peer.in_flight) and now - min(peer.in_flight.values()) > STALL_TIMEOUT

    def check_pow(self, header: BlockHeader, block_hash: bytes) -> None:
        pow_hash = self.params.pow_algorithm.pow_hash(header, block_hash)
        error = proof_of_work_error(pow_hash, header.bits, self.params.pow_limit)
        if error is not None:
            raise Misbehaving(f"high-hash: header {display_hex(block_hash)[:16]}: {error}")

    async def ask_headers(self, peer: Peer, first: bytes | None = None) -> None:
        ours = await self.service.on_chain(locator)
        hashes = ([first] if first else []) + ours
        await peer.send("getheaders", p2p.GetHeaders(tuple(hashes[:p2p.MAX_LOCATOR])).serialize())

    async def on_headers(self, peer: Peer, headers: list[BlockHeader]) -> None:
        if not headers:
            return
        hashes = [h.hash() for h in headers]
        for i, header in enumerate(headers):
            if i and header.prev_hash != hashes[i - 1]:
                raise Misbehaving("non-continuous headers sequence")
            self.check_pow(header, hashes[i])
        peer.known.update(hashes)
        parent = headers[0].prev_hash
        known = await self.service.on_chain(_anchors, [parent, *hashes])
        if parent not in known and parent not in self.headers:
            peer.unconnecting += 1
            if peer.unconnecting > MAX_UNCONNECTING:
                raise Misbehaving(f"{peer.unconnecting} headers messages in a row that do not connect")
            await self.ask_headers(peer)
            return
        peer.unconnecting = 0
        first = 0
        while first < len(headers) and hashes[first] in known:
            first += 1
        bad = next((h for h in [parent, *hashes[:first]] if h in known and not known[h].valid), None)
        if bad is not None:
            raise Misbehaving(f"headers build on invalid block {display_hex(bad)[:16]}")
        anchor = known.get(hashes[first - 1] if first else parent)
        if first < len(headers):
            passed = await self._check_context(headers[first:], hashes[first:])
            try:
                new = self.headers.add(headers[first:first + passed], hashes[first:first + passed], anchor) \
                    if passed else []
            except HeadersFull as exc:
                raise PeerGone(str(exc)) from None
            if new:
                peer.best_height = max(peer.best_height, new[-1].height)
        elif anchor is not None:
            peer.best_height = max(peer.best_height, anchor.height)
        if len(headers) == p2p.MAX_HEADERS:
            await self.ask_headers(peer, hashes[-1])  # there may be more
        self.schedule()

    async def _check_context(self, headers: list[BlockHeader], hashes: list[bytes]) -> int:
        """The run's headers against their ancestors, stored and held: the bits the retarget rule
        demands, a time above the median time past, the version. How many passed: a header too
        far in the future stops the run without blame (Core's BLOCK_TIME_FUTURE; it may be fine
        later); any other failure is misbehaviour."""
        held = []
        below = headers[0].prev_hash
        while below in self.headers:
            entry = self.headers.entries[below]
            held.append(entry)
            below = entry.parent
        times, bits = await self.service.on_chain(_history, below)
        for entry in reversed(held):
            times.append(entry.header.time)
            bits.append(entry.header.bits)
        now = int(time.time())
        for i, (header, block_hash) in enumerate(zip(headers, hashes, strict=True)):
            try:
                check_header(self.params, self.rule, len(times), header, block_hash, header.prev_hash,
                             times, bits, now, check_pow=False)
            except InvalidBlock as exc:
                if exc.reason == "time-too-new":
                    return i
                self.headers.mark_invalid(block_hash)
                raise Misbehaving(f"{exc.reason}: header {display_hex(block_hash)[:16]}: {exc}") from None
            times.append(header.time)
            bits.append(header.bits)
        return len(headers)

    async def on_inv(self, peer: Peer, items: list[p2p.Inventory]) -> None:
        blocks = [i.hash for i in items if i.is_block]
        if not blocks:
            return
        peer.known.update(blocks)
        known = await self.service.on_chain(_anchors, blocks)
        if any(h not in known and h not in self.headers for h in blocks):
            await self.ask_headers(peer)  # headers first: the block follows its header

    async def on_block(self, peer: Peer, block: Block) -> None:
        """Queue an arrived block for storing; the peer's loop goes on reading meanwhile, so
        blocks that arrive while a batch is being stored are stored together in the next one."""
        h = block.hash
        self.check_pow(block.header, h)
        if peer.in_flight.pop(h, None) is not None:
            self.in_flight.pop(h, None)
        peer.known.add(h)
        if len(self._arrived) >= MAX_BUFFERED:
            return  # dropped: asked for again when the plan comes back to it
        self._arrived.append((block, peer.id))
        self._pending.add(h)
        if self._storer is None or self._storer.done():
            self._storer = self._spawn(self._store_arrived())

    async def _store_arrived(self) -> None:
        """Store what arrived, in batches of up to MAX_BATCH (one transaction each: a lone
        block at the tip is a batch of one), parents first where the held headers tell."""
        while self._arrived:
            batch, self._arrived = self._arrived[:MAX_BATCH], self._arrived[MAX_BATCH:]
            held = self.headers.entries
            batch.sort(key=lambda item: held[item[0].hash].height if item[0].hash in held else 1 << 62)
            verdicts = await self.service.submit_blocks([block for block, _ in batch])
            for (block, source), verdict in zip(batch, verdicts, strict=True):
                self._pending.discard(block.hash)
                sender = self.peers.get(source)
                if verdict == "prev-blk-not-found":
                    self._buffer(block, source)
                    if sender is not None and block.header.prev_hash not in self.headers:
                        self._spawn(self._quiet(self.ask_headers(sender)))
                elif verdict not in (None, "inconclusive", "duplicate"):
                    self.headers.mark_invalid(block.hash)
                    if sender is not None:
                        self._punish(sender, f"invalid block {display_hex(block.hash)[:16]}: {verdict}")
                else:
                    self.headers.stored(block.hash)
                    waiting = self.buffered.pop(block.hash, [])
                    self._buffered_count -= len(waiting)
                    self._arrived.extend(waiting)
                    self._pending.update(b.hash for b, _ in waiting)
            self.schedule()

    @staticmethod
    async def _quiet(coro) -> None:
        with contextlib.suppress(PeerGone):
            await coro

    def _buffer(self, block: Block, source: int) -> None:
        if self._buffered_count >= MAX_BUFFERED:
            return  # dropped: it will be asked for again when its parent is in
        self.buffered.setdefault(block.header.prev_hash, []).append((block, source))
        self._buffered_count += 1

    # ------------------------------------------------------------------ block download

    def schedule(self) -> None:
        """Ask peers for the next blocks on the way to the most-work header."""
        best = self.headers.best()
        tip = self.service.tip
        if best is None or tip is None or best.chainwork <= tip.chainwork:
            return
        if self._plan_best != best.hash:
            self._plan = [e.hash for e in self.headers.path_to(best)]
            self._plan_best, self._plan_pos = best.hash, 0
        while self._plan_pos < len(self._plan) and self._plan[self._plan_pos] not in self.headers:
            self._plan_pos += 1  # stored already
        waiting = {b.hash for blocks in self.buffered.values() for b, _ in blocks}
        for peer in sorted((p for p in self.peers.values() if p.ready and not p.closed),
                           key=lambda p: len(p.in_flight)):
            free = MAX_IN_FLIGHT - len(peer.in_flight)
            want = []
            for h in self._plan[self._plan_pos:self._plan_pos + MAX_IN_FLIGHT * (len(self.peers) + 1)
                                + len(waiting) + len(self._pending)]:
                if len(want) >= free:
                    break
                if h in peer.known and h not in self.in_flight and h not in waiting \
                        and h not in self._pending and h in self.headers:
                    want.append(h)
            if not want:
                continue
            now = time.monotonic()
            for h in want:
                peer.in_flight[h] = now
                self.in_flight[h] = peer.id
            self._spawn(self._request(peer, want))

    async def _request(self, peer: Peer, hashes: list[bytes]) -> None:
        items = [p2p.Inventory(p2p.MSG_WITNESS_BLOCK, h) for h in hashes]
        with contextlib.suppress(PeerGone):
            await peer.send("getdata", p2p.inv_payload(items))
