"""Headers-first sync: headers judged and held as they arrive, each peer asked for the blocks on
the way to its own best header, and each block stored by the chain.

Sync owns the download state (`download.BlockDownload`, keyed by peer id), the held headers
(`headers.HeaderTree`) and the blocks not stored yet (`arrivals.Arrivals`). It never touches a
connection: every entry point returns the decisions (`decisions`) the manager carries out: ask
a peer for blocks or headers, drop it, punish it, run the storer.

A headers message is judged on its own (the headers link, each meets its proof of work), then
connected to what we know (a stored or held parent; the bits, time and version its ancestors
demand), then recorded (held, and the peer's best header moved). Arrived blocks queue while a
batch is being stored and go in together (`MAX_BATCH` per transaction).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from miner.chain.locator import locator
from miner.chain.outcome import BlockOutcome, BlockResult
from miner.consensus.params import ChainParams
from miner.errors import MinerError
from miner.node.p2p.acceptance import MAX_AHEAD, Unrequested, judge_unrequested
from miner.node.p2p.arrivals import Arrival, Arrivals
from miner.node.p2p.blame import header_is_invalid, punishment
from miner.node.p2p.chain_queries import anchors, branch_lengths
from miner.node.p2p.decisions import AskBlocks, AskHeaders, Decision, Drop, Punish, StoreArrived
from miner.node.p2p.download import STALL_TIMEOUT, BlockDownload
from miner.node.p2p.header_checks import HeaderJudge
from miner.node.p2p.headers import EVICT_SHARE, MAX_HEADERS_HELD, Anchor, HeadersFull, HeaderTree
from miner.node.p2p.peer import Misbehaving
from miner.node.service import NodeService
from miner.primitives import p2p
from miner.primitives.block import Block
from miner.primitives.hashes import display_hex
from miner.primitives.header import BlockHeader

log = logging.getLogger(__name__)

MAX_BATCH = 256  # blocks stored in one transaction during a sync
MAX_UNCONNECTING = 10  # Core's MAX_NUM_UNCONNECTING_HEADERS_MSGS


@dataclass(frozen=True)
class SyncLimits:
    """Sync's clocks and bounds (tests shorten them)."""

    stall_timeout: float = STALL_TIMEOUT  # s a peer that owes blocks may deliver none
    # s after a peer leaves until the held branches no connected peer claims are forgotten
    forget_after: float = STALL_TIMEOUT
    header_limit: int = MAX_HEADERS_HELD


@dataclass(frozen=True)
class Connected:
    """A headers message connected to what we know: the stored ones among its headers (and its
    parent), where the new ones start, and where the ones that passed their checks end."""

    known: dict[bytes, Anchor]
    first: int
    end: int


class BlockSync:
    def __init__(self, service: NodeService, params: ChainParams, limits: SyncLimits = SyncLimits()):
        self.service, self.params, self.limits = service, params, limits
        self.headers = HeaderTree(limits.header_limit)
        self.judge = HeaderJudge(service, params, self.headers)
        self.download = BlockDownload(limits.stall_timeout)
        self.arrivals = Arrivals()
        self._forget_at: float | None = None
        self.unrequested_dropped = 0  # blocks nobody asked for, not stored (Core's AcceptBlock)

    # ------------------------------------------------------------------ peers

    async def join(self, peer: int) -> list[Decision]:
        """A peer finished its handshake: ask it for headers."""
        self.download.join(peer)
        return [await self.ask_headers(peer)]

    def delivered(self, peer: int) -> int:
        """Blocks `peer` delivered that we had asked of it: a productive peer, which the guard
        keeps longest when the inbound slots run out."""
        state = self.download.peers.get(peer)
        return state.delivered if state is not None else 0

    def leave(self, peer: int) -> list[Decision]:
        """A peer left: its blocks in flight go to others, and the branches only it claimed are
        forgotten a while later unless another peer claims them meanwhile."""
        self.download.leave(peer)
        if self._forget_at is None:
            self._forget_at = time.monotonic() + self.limits.forget_after
        return self.schedule()

    async def tick(self, now: float) -> list[Decision]:
        """Housekeeping: peers that stalled a download are dropped (a strike), and held branches
        that no connected peer claims are forgotten once a peer has been gone a while: the
        headers of a stranger who could not deliver their blocks do not stay for ever."""
        if self._forget_at is not None and now >= self._forget_at:
            self._forget_at = None
            gone = self.headers.keep_only([*self.download.claimed(), *self.download.in_flight, *self.arrivals.held()])
            if gone:
                log.info("forgot %d held headers no connected peer claims", gone)
        decisions: list[Decision] = [Drop(pid, "stalled a block download", stalled=True)
                                     for pid in self.download.stalled(now)]
        if self.headers.has_room(self.headers.limit // EVICT_SHARE):
            for pid, state in self.download.peers.items():
                if state.refused:  # its headers found no room before: ask again
                    state.refused = False
                    decisions.append(await self.ask_headers(pid))
        return decisions

    # ------------------------------------------------------------------ reports

    async def headers_only_tips(self) -> list[dict]:
        """getchaintips' rows for held headers no held header builds on (Core's `headers-only`):
        height, hash and the length of the branch from the active chain."""
        rows = self.headers.tips()
        if not rows:
            return []
        stored_branch = await self.service.on_chain(branch_lengths, [root for _, root, _ in rows])
        return [{"height": tip.height, "hash": display_hex(tip.hash),
                 "branchlen": held + stored_branch.get(root, 0), "status": "headers-only"}
                for tip, root, held in rows]

    def best_header_height(self) -> int:
        best = self.headers.best()
        return best.height if best is not None else -1

    def best_of(self, peer: int) -> tuple[bytes | None, int]:
        """The best header `peer` told us of (None: none yet) and its height (-1: none)."""
        state = self.download.peers.get(peer)
        return (state.best, state.best_height) if state is not None else (None, -1)

    def in_flight_heights(self, peer: int) -> list[int]:
        return self.download.in_flight_heights(peer, self.headers)

    # ------------------------------------------------------------------ headers

    async def ask_headers(self, peer: int, first: bytes | None = None) -> AskHeaders:
        """getheaders from the parent of the best header we hold (then our chain's locator): a
        peer goes on from where the headers we have end rather than sending them all again, and
        one that has our best header sends at least that one back, so we learn it has those
        blocks (Core's locator from `m_best_header->pprev`)."""
        ours = await self.service.on_chain(locator)
        best = self.headers.best()
        hashes = [h for h in (first, best.parent if best else None) if h] + ours
        return AskHeaders(peer, tuple(hashes[:p2p.MAX_LOCATOR]))

    async def on_headers(self, peer: int, headers: list[BlockHeader]) -> list[Decision]:
        if not headers or peer not in self.download.peers:
            return []
        try:
            hashes = await self.judge.on_their_own(headers)
            connected = await self._connect(peer, headers, hashes)
        except Misbehaving as exc:
            return [Punish(peer, str(exc))]
        if isinstance(connected, AskHeaders):
            return [connected]
        return await self._record(peer, headers, hashes, connected)

    async def _connect(self, peer: int, headers: list[BlockHeader], hashes: list[bytes]) -> Connected | AskHeaders:
        """The message against what we know: a parent stored or held (else ask for the headers
        between, up to MAX_UNCONNECTING times in a row), no invalid ancestor, and the new
        headers' bits, times and versions by their ancestors' rules."""
        state = self.download.peers[peer]
        parent = headers[0].prev_hash
        known = await self.service.on_chain(anchors, [parent, *hashes])
        if parent not in known and parent not in self.headers:
            state.unconnecting += 1
            if state.unconnecting > MAX_UNCONNECTING:
                raise Misbehaving(f"{state.unconnecting} headers messages in a row that do not connect")
            return await self.ask_headers(peer)
        state.unconnecting = 0
        bad = next((h for h in [parent, *hashes] if h in known and not known[h].valid), None)
        if bad is not None:
            raise Misbehaving(f"headers build on invalid block {display_hex(bad)[:16]}")
        first = self._first_new(hashes, known)
        passed = await self.judge.in_context(headers[first:], hashes[first:]) if first < len(headers) else 0
        # Read again after the awaits: the storer may have stored some of these meanwhile.
        known = await self.service.on_chain(anchors, [parent, *hashes])
        first = self._first_new(hashes, known)
        return Connected(known, first, min(len(headers), first + passed))

    @staticmethod
    def _first_new(hashes: list[bytes], known: dict[bytes, Anchor]) -> int:
        first = 0
        while first < len(hashes) and hashes[first] in known:
            first += 1
        return first

    async def _record(self, peer: int, headers: list[BlockHeader], hashes: list[bytes],
                      connected: Connected) -> list[Decision]:
        """Hold the new headers, move the peer's best header, and ask for what follows."""
        known, first, end = connected.known, connected.first, connected.end
        if first < end:
            anchor = known.get(hashes[first - 1] if first else headers[0].prev_hash)
            if anchor is None and headers[first].prev_hash not in self.headers:
                return []  # its parent was stored and pruned meanwhile: the next getheaders brings it
            try:
                self.headers.add(headers[first:end], hashes[first:end], anchor, self._tip_work(),
                                 self._protected(), any_work=self.download.peers[peer].delivered > 0)
            except HeadersFull as exc:
                # Not held, and nobody dropped for it: an honest peer's announcement must not
                # cost it the connection. It is asked again once there is room.
                log.info("peer %d: %d headers not held (%s)", peer, end - first, exc)
                self.download.peers[peer].refused = True
                return []
        last = hashes[end - 1] if end else hashes[first - 1] if first else None
        entry = self.headers.entries.get(last) if last else None
        if entry is not None:
            self.download.saw(peer, last, entry.height, entry.chainwork)
        elif last in known:
            self.download.saw(peer, last, known[last].height, known[last].chainwork)
        decisions: list[Decision] = []
        if len(headers) == p2p.MAX_HEADERS and end == len(headers):
            decisions.append(await self.ask_headers(peer, hashes[-1]))  # there may be more
        return decisions + self.schedule()

    def _tip_work(self) -> int:
        return self.service.tip.chainwork if self.service.tip else 0

    def _protected(self) -> Iterator[bytes]:
        """What a full header tree must not drop to make room (read only when it is full): the
        blocks in flight or arrived, and the branches of the peers that deliver blocks."""
        yield from self.download.in_flight
        yield from self.arrivals.held()
        for pid in self.download.productive():
            best = self.download.peers[pid].best
            if best is not None:
                yield best

    async def on_inv(self, peer: int, items: list[p2p.Inventory]) -> list[Decision]:
        blocks = [i.hash for i in items if i.is_block]
        if not blocks or peer not in self.download.peers:
            return []
        known = await self.service.on_chain(anchors, blocks)
        unknown = False
        for h in blocks:
            entry = self.headers.entries.get(h)
            if entry is not None:
                self.download.saw(peer, h, entry.height, entry.chainwork)
            elif h in known:
                self.download.saw(peer, h, known[h].height, known[h].chainwork)
            else:
                unknown = True
        if unknown:
            return [await self.ask_headers(peer)]  # headers first: the block follows its header
        return self.schedule()

    def on_notfound(self, peer: int, items: list[p2p.Inventory]) -> list[Decision]:
        """`notfound` for a block we asked of this peer, which it announced (we only ask a peer
        for blocks below the best header it told us of): it cannot deliver what it announced.
        That is a stall, at once: it is dropped with a strike, and the block goes to others."""
        state = self.download.peers.get(peer)
        missing = next((i.hash for i in items if i.is_block and state and i.hash in state.in_flight), None)
        if missing is None:
            return []
        return [Drop(peer, f"notfound for block {display_hex(missing)[:16]}, which it announced", stalled=True)]

    # ------------------------------------------------------------------ blocks

    async def on_block(self, peer: int, block: Block) -> list[Decision]:
        """Queue an arrived block for storing; the peer's loop goes on reading meanwhile, so
        blocks that arrive while a batch is being stored are stored together in the next one."""
        h = block.hash
        try:
            self.judge.check_pow(block.header, h)
        except Misbehaving as exc:
            return [Punish(peer, str(exc))]
        requested = self.download.arrived(h, peer, time.monotonic())
        if h in self.arrivals:
            return []
        if not requested:
            verdict = await self.service.on_chain(judge_unrequested, block, int(time.time()))
            if verdict.refused is not None:
                return self._punished(peer, verdict.refused)
            if not verdict.store:
                return await self._unrequested_not_stored(peer, block, verdict)
        if not self.arrivals.queue(Arrival(block, peer, requested or h in self.headers)):
            return []  # dropped: asked for again when the download comes back to it
        return [StoreArrived()]

    async def _unrequested_not_stored(self, peer: int, block: Block, verdict: Unrequested) -> list[Decision]:
        """An unrequested block that is not stored now: dropped, unless its parent is missing and
        its held header shows it worth waiting for (more work than our tip, not too far ahead);
        for a parent we do not know of at all we ask for the headers between."""
        self.unrequested_dropped += not verdict.known
        if not verdict.parent_missing:
            log.debug("peer %d: unrequested block %s not stored (%s)", peer, display_hex(block.hash)[:16],
                      verdict.reason)
            return []
        held = self.headers.entries.get(block.hash)
        if held is not None and held.chainwork > verdict.tip_work and held.height <= verdict.tip_height + MAX_AHEAD:
            if self.arrivals.queue(Arrival(block, peer, True)):
                return [StoreArrived()]  # stored once its parent is (it waits for it)
            return []
        if block.header.prev_hash not in self.headers:
            return [await self.ask_headers(peer)]
        return []

    def has_arrivals(self) -> bool:
        return bool(self.arrivals)

    async def store_batch(self) -> list[Decision]:
        """Store the next batch of what arrived (one transaction: a lone block at the tip is a
        batch of one), parents first where the held headers tell; what to do next."""
        held = self.headers.entries
        batch = self.arrivals.take(MAX_BATCH, lambda a: held[a.block.hash].height if a.block.hash in held else 1 << 62)
        if not batch:
            return []
        try:
            outcomes = await self.service.submit_blocks([a.block for a in batch])
        except MinerError as exc:  # the file failed (disk full): nothing of the batch was stored
            log.warning("%d blocks from peers not stored: %s", len(batch), exc)
            outcomes = [BlockOutcome(BlockResult.NOT_STORED, a.block.hash, message=str(exc)) for a in batch]
        decisions: list[Decision] = []
        ask = set()
        for arrival, outcome in zip(batch, outcomes, strict=True):
            self.arrivals.stored(arrival)
            decisions += self._judged(arrival, outcome, ask)
        for pid in ask:
            decisions.append(await self.ask_headers(pid))
        return decisions + self.schedule()

    def _judged(self, arrival: Arrival, outcome: BlockOutcome, ask_headers: set[int]) -> list[Decision]:
        block, sender = arrival.block, arrival.sender
        if outcome.stored:
            self.headers.stored(block.hash)
            self.arrivals.parent_stored(block.hash)
        elif outcome.result is BlockResult.MISSING_PREV:
            if not (arrival.solicited and self.arrivals.wait_for_parent(arrival)) \
                    and sender in self.download.peers and block.header.prev_hash not in self.headers:
                ask_headers.add(sender)
        elif punishment(outcome) is not None:
            return self._punished(sender, outcome)
        # else no fault of the peer's (too far ahead, our file failed): asked for again when the
        # download comes back to it
        return []

    def _punished(self, peer: int, outcome: BlockOutcome) -> list[Decision]:
        """Punish the sender of a bad block (`blame`), and hold its header invalid unless the
        body may be a mutated copy of a good block."""
        if header_is_invalid(outcome):
            self.headers.mark_invalid(outcome.hash)
        why = punishment(outcome)
        assert why is not None, outcome  # called for punished outcomes only
        return [Punish(peer, why)]

    # ------------------------------------------------------------------ block download

    def schedule(self) -> list[Decision]:
        """Ask each peer, the least busy first, for the next blocks toward its own best header."""
        tip_work = self._tip_work()
        now = time.monotonic()
        out: list[Decision] = []
        for pid in sorted(self.download.peers, key=lambda p: len(self.download.peers[p].in_flight)):
            want = self.download.next_blocks(pid, self.headers, tip_work, self.arrivals)
            if want:
                self.download.asked(pid, want, now)
                out.append(AskBlocks(pid, tuple(want)))
        return out
