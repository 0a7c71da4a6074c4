"""Headers-first sync: headers checked and held as they arrive, the blocks on the way to the
most-work header fetched from the peers that have them, and each block stored by the chain.

Headers are checked on their own (they link, proof of work, bits, time, version) and held in a
`HeaderTree`; the path from the chain's blocks to the most-work held header is the download
plan. A peer is known to have a block when it is an ancestor of the best header the peer told
us of (Core's rule), so a peer that announces only its new tip serves the blocks below it too.
Peers are asked for at most `MAX_IN_FLIGHT` blocks each, the least busy first; a peer that
delivers nothing for `STALL_TIMEOUT` while it owes blocks is dropped (by the manager's
housekeeping) and its blocks go to others. Arrivals queue while a batch is being stored and
go in together (`MAX_BATCH` per transaction); a block that arrives before its parent waits,
bounded, if we asked for it or hold its header, and is dropped otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from miner.chain.chain import Chain
from miner.chain.locator import locator
from miner.consensus.checks import MUTATED, check_header
from miner.consensus.params import ChainParams
from miner.consensus.pow import proof_of_work_error
from miner.errors import InvalidBlock, MinerError
from miner.node.p2p.headers import Anchor, HeadersFull, HeaderTree
from miner.node.p2p.peer import Misbehaving, Peer, PeerGone
from miner.node.service import NodeService
from miner.primitives import p2p
from miner.primitives.block import Block
from miner.primitives.hashes import display_hex
from miner.primitives.header import BlockHeader

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16  # Core's MAX_BLOCKS_IN_TRANSIT_PER_PEER
STALL_TIMEOUT = 10.0  # s a peer that owes blocks may deliver nothing
MAX_WAITING = 1024  # blocks received before their parent, and blocks queued to be stored
MAX_WAITING_BYTES = 64 << 20
MAX_BATCH = 256  # blocks stored in one transaction during a sync
MAX_UNCONNECTING = 10  # Core's MAX_NUM_UNCONNECTING_HEADERS_MSGS
OK_VERDICTS = (None, "inconclusive", "duplicate")


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
        self.buffered: dict[bytes, list[tuple[Block, int, bool]]] = {}  # parent hash -> blocks waiting
        self._buffered_hashes: set[bytes] = set()
        self._waiting_bytes = 0
        self._plan: list[bytes] = []
        self._plan_index: dict[bytes, int] = {}
        self._plan_best: bytes | None = None
        self._plan_pos = 0
        self._arrived: list[tuple[Block, int, bool]] = []  # (block, peer id, asked for) to store
        self._storer: asyncio.Task | None = None
        self._pending: set[bytes] = set()  # arrived, not yet stored: never asked for again meanwhile

    # ------------------------------------------------------------------ reports

    async def headers_only_tips(self) -> list[dict]:
        """getchaintips' rows for held headers no held header builds on (Core's `headers-only`):
        height, hash and the length of the branch from the active chain."""
        rows = self.headers.tips()
        if not rows:
            return []

        def forks(chain: Chain) -> dict[bytes, int]:
            out = {}
            for _, root, _ in rows:
                node = chain.tree.nodes.get(root)
                if node is not None and root not in out:
                    out[root] = len(chain.tree.branch(node))
            return out
        stored_branch = await self.service.on_chain(forks)
        return [{"height": tip.height, "hash": display_hex(tip.hash),
                 "branchlen": held + stored_branch.get(root, 0), "status": "headers-only"}
                for tip, root, held in rows]

    def best_header_height(self) -> int:
        best = self.headers.best()
        return best.height if best is not None else -1

    def in_flight_heights(self, peer: Peer) -> list[int]:
        held = self.headers.entries
        return sorted(held[h].height for h in peer.in_flight if h in held)

    # ------------------------------------------------------------------ peers

    def release(self, peer: Peer) -> None:
        """A peer left: its blocks in flight are free for others."""
        for h in peer.in_flight:
            if self.in_flight.get(h) == peer.id:
                del self.in_flight[h]
        peer.in_flight.clear()

    def stalled(self, peer: Peer, now: float) -> bool:
        """It owes blocks and has delivered none for STALL_TIMEOUT (the clock restarts at each
        delivery, as Core's does, so a peer that is slow but delivering stays)."""
        if not peer.in_flight:
            return False
        return now - max(min(peer.in_flight.values()), peer.last_delivery) > STALL_TIMEOUT

    def _saw(self, peer: Peer, block_hash: bytes, height: int, chainwork: int) -> None:
        """The peer has this block (and so all below it)."""
        peer.known.add(block_hash)
        if chainwork > peer.best_work:
            peer.best_known, peer.best_work, peer.best_height = block_hash, chainwork, height

    # ------------------------------------------------------------------ headers

    def check_pow(self, header: BlockHeader, block_hash: bytes) -> None:
        pow_hash = self.params.pow_algorithm.pow_hash(header, block_hash)
        error = proof_of_work_error(pow_hash, header.bits, self.params.pow_limit)
        if error is not None:
            raise Misbehaving(f"high-hash: header {display_hex(block_hash)[:16]}: {error}")

    async def ask_headers(self, peer: Peer, first: bytes | None = None) -> None:
        """getheaders from the parent of the best header we hold (then our chain's locator): a
        peer goes on from where the headers we have end rather than sending them all again, and
        one that has our best header sends at least that one back, so we learn it has those
        blocks (Core's locator from `m_best_header->pprev`)."""
        ours = await self.service.on_chain(locator)
        best = self.headers.best()
        hashes = [h for h in (first, best.parent if best else None) if h] + ours
        await peer.send("getheaders", p2p.GetHeaders(tuple(hashes[:p2p.MAX_LOCATOR])).serialize())

    async def on_headers(self, peer: Peer, headers: list[BlockHeader]) -> None:
        if not headers:
            return
        hashes = [h.hash() for h in headers]
        for i, header in enumerate(headers):
            if i and header.prev_hash != hashes[i - 1]:
                raise Misbehaving("non-continuous headers sequence")
            self.check_pow(header, hashes[i])
        parent = headers[0].prev_hash
        known = await self.service.on_chain(_anchors, [parent, *hashes])
        if parent not in known and parent not in self.headers:
            peer.unconnecting += 1
            if peer.unconnecting > MAX_UNCONNECTING:
                raise Misbehaving(f"{peer.unconnecting} headers messages in a row that do not connect")
            await self.ask_headers(peer)
            return
        peer.unconnecting = 0
        bad = next((h for h in [parent, *hashes] if h in known and not known[h].valid), None)
        if bad is not None:
            raise Misbehaving(f"headers build on invalid block {display_hex(bad)[:16]}")
        first = 0
        while first < len(headers) and hashes[first] in known:
            first += 1
        passed = await self._check_context(headers[first:], hashes[first:]) if first < len(headers) else 0
        # Read again after the awaits: the storer may have stored some of these meanwhile.
        known = await self.service.on_chain(_anchors, [parent, *hashes])
        first = 0
        while first < len(headers) and hashes[first] in known:
            first += 1
        end = min(len(headers), first + passed)
        if first < end:
            anchor = known.get(hashes[first - 1] if first else parent)
            if anchor is None and headers[first].prev_hash not in self.headers:
                return  # its parent was stored and pruned meanwhile: the next getheaders brings it
            try:
                self.headers.add(headers[first:end], hashes[first:end], anchor,
                                 self.service.tip.chainwork if self.service.tip else 0)
            except HeadersFull as exc:
                raise PeerGone(str(exc)) from None
        last = hashes[end - 1] if end else hashes[first - 1] if first else None
        entry = self.headers.entries.get(last) if last else None
        if entry is not None:
            self._saw(peer, last, entry.height, entry.chainwork)
        elif last in known:
            self._saw(peer, last, known[last].height, known[last].chainwork)
        if len(headers) == p2p.MAX_HEADERS and end == len(headers):
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
        known = await self.service.on_chain(_anchors, blocks)
        unknown = False
        for h in blocks:
            entry = self.headers.entries.get(h)
            if entry is not None:
                self._saw(peer, h, entry.height, entry.chainwork)
            elif h in known:
                self._saw(peer, h, known[h].height, known[h].chainwork)
            else:
                unknown = True
        if unknown:
            await self.ask_headers(peer)  # headers first: the block follows its header
        else:
            self.schedule()

    # ------------------------------------------------------------------ blocks

    async def on_block(self, peer: Peer, block: Block) -> None:
        """Queue an arrived block for storing; the peer's loop goes on reading meanwhile, so
        blocks that arrive while a batch is being stored are stored together in the next one."""
        h = block.hash
        self.check_pow(block.header, h)
        asked = peer.in_flight.pop(h, None) is not None
        if asked:
            self.in_flight.pop(h, None)
            peer.last_delivery = time.monotonic()
        peer.known.add(h)
        if h in self._pending or h in self._buffered_hashes:
            return
        size = block.size
        if len(self._arrived) >= MAX_WAITING or self._waiting_bytes + size > MAX_WAITING_BYTES:
            return  # dropped: asked for again when the plan comes back to it
        self._arrived.append((block, peer.id, asked or h in self.headers))
        self._pending.add(h)
        self._waiting_bytes += size
        if self._storer is None or self._storer.done():
            self._storer = self._spawn(self._store_arrived())

    async def _store_arrived(self) -> None:
        """Store what arrived, in batches of up to MAX_BATCH (one transaction each: a lone
        block at the tip is a batch of one), parents first where the held headers tell."""
        while self._arrived:
            batch, self._arrived = self._arrived[:MAX_BATCH], self._arrived[MAX_BATCH:]
            held = self.headers.entries
            batch.sort(key=lambda item: held[item[0].hash].height if item[0].hash in held else 1 << 62)
            try:
                verdicts = await self.service.submit_blocks([block for block, _, _ in batch])
            except MinerError as exc:  # the file failed (disk full): nothing of the batch was stored
                log.warning("%d blocks from peers not stored: %s", len(batch), exc)
                verdicts = ["not-stored"] * len(batch)
            for (block, source, solicited), verdict in zip(batch, verdicts, strict=True):
                self._pending.discard(block.hash)
                self._waiting_bytes -= block.size
                self._judged(block, source, solicited, verdict)
            self.schedule()

    def _judged(self, block: Block, source: int, solicited: bool, verdict: str | None) -> None:
        sender = self.peers.get(source)
        if verdict in OK_VERDICTS:
            self.headers.stored(block.hash)
            for child, child_source, child_solicited in self.buffered.pop(block.hash, []):
                self._buffered_hashes.discard(child.hash)
                self._arrived.append((child, child_source, child_solicited))
                self._pending.add(child.hash)
        elif verdict == "prev-blk-not-found":
            if solicited and len(self._buffered_hashes) < MAX_WAITING and \
                    self._waiting_bytes + block.size <= MAX_WAITING_BYTES:
                self.buffered.setdefault(block.header.prev_hash, []).append((block, source, solicited))
                self._buffered_hashes.add(block.hash)
                self._waiting_bytes += block.size
            elif sender is not None and block.header.prev_hash not in self.headers:
                self._spawn(self._quiet(self.ask_headers(sender)))
        elif verdict in ("time-too-new", "not-stored"):
            pass  # no fault of the peer's; asked for again when the plan comes back to it
        else:
            if verdict not in MUTATED:  # a mutated copy says nothing against the header itself
                self.headers.mark_invalid(block.hash)
            if sender is not None:
                self._punish(sender, f"invalid block {display_hex(block.hash)[:16]}: {verdict}")

    @staticmethod
    async def _quiet(coro) -> None:
        with contextlib.suppress(PeerGone):
            await coro

    # ------------------------------------------------------------------ block download

    def _reach(self, peer: Peer) -> int:
        """The index in the plan of the last block this peer has (-1: none), from the best
        header it told us of; cached until that or the plan changes."""
        key = (peer.best_known, self._plan_best)
        if peer.reach[0] == key:
            return peer.reach[1]
        reach, h = -1, peer.best_known
        while h is not None:
            if (i := self._plan_index.get(h)) is not None:
                reach = i
                break
            entry = self.headers.entries.get(h)
            h = entry.parent if entry is not None else None
        peer.reach = (key, reach)
        return reach

    def schedule(self) -> None:
        """Ask peers for the next blocks on the way to the most-work header."""
        best = self.headers.best()
        tip = self.service.tip
        if best is None or tip is None or best.chainwork <= tip.chainwork:
            return
        if self._plan_best != best.hash:
            self._plan = [e.hash for e in self.headers.path_to(best)]
            self._plan_index = {h: i for i, h in enumerate(self._plan)}
            self._plan_best, self._plan_pos = best.hash, 0
        while self._plan_pos < len(self._plan) and self._plan[self._plan_pos] not in self.headers:
            self._plan_pos += 1  # stored already
        window = MAX_IN_FLIGHT * (len(self.peers) + 1) + len(self._buffered_hashes) + len(self._pending)
        for peer in sorted((p for p in self.peers.values() if p.ready and not p.closed),
                           key=lambda p: len(p.in_flight)):
            free = MAX_IN_FLIGHT - len(peer.in_flight)
            reach = self._reach(peer)
            if free <= 0 or reach < self._plan_pos:
                continue
            want = []
            for h in self._plan[self._plan_pos:min(reach + 1, self._plan_pos + window)]:
                if h not in self.in_flight and h not in self._buffered_hashes and h not in self._pending \
                        and h in self.headers:
                    want.append(h)
                    if len(want) >= free:
                        break
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
