"""The node's state behind the RPC methods: the chain (one writer), the mempool, templates and
long polls.

The chain file is touched by one thread only, the chain thread: every read and every block goes
through it in turn (SQLite connections are not shared across threads, and one writer means the
node's view of the tip is never behind the file). The event loop awaits it, so a block being
validated and stored never stalls other requests that need no chain access; templates are built
once per tip and mempool change and served from memory, and long polls wait on a condition that
each change notifies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from miner.chain.chain import Chain
from miner.chain.index import TipChange
from miner.chain.outcome import BlockOutcome, BlockResult
from miner.chain.verify import check_proposal
from miner.consensus.checks import MAX_BLOCK_WEIGHT, halving_interval, median_time_past
from miner.consensus.params import ChainParams
from miner.node.mempool import Mempool, MempoolRejected
from miner.node.template import (
    COINBASE_RESERVED_WEIGHT,
    TipInfo,
    block_template,
    longpoll_id,
)
from miner.primitives.block import Block
from miner.primitives.compact import bits_to_target
from miner.primitives.transaction import Transaction

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Accepted:
    """A block the chain stored and made its tip, for the node's log and listeners."""

    hash: bytes
    height: int
    at: float  # wall clock when it was committed


def read_tip(chain: Chain) -> TipInfo:
    """The tip as templates need it (chain thread)."""
    tip = chain.node(chain.tip_hash)
    next_bits = chain.next_bits()
    return TipInfo(height=chain.height, hash=chain.tip_hash, time=tip.time, bits=tip.bits,
                   chainwork=tip.chainwork, median_time=median_time_past(chain.times, chain.height + 1),
                   next_bits=next_bits, next_target=bits_to_target(next_bits, chain.params.pow_limit),
                   next_min_time=chain.min_next_time(), chain_name=chain.params.name,
                   halving_interval=halving_interval(chain.params.name))


class NodeService:
    def __init__(self, chain_path: Path):
        self.chain_path = chain_path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="chain")
        self.chain: Chain | None = None
        self.mempool = Mempool()
        self.tip: TipInfo | None = None
        self._changed: asyncio.Condition | None = None
        self._template: tuple[str, dict] | None = None  # (longpollid, template)
        self.closing = False
        self.listeners: list[Callable[[Accepted], None]] = []
        self.started = time.time()

    # ------------------------------------------------------------------ the chain thread

    async def on_chain(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(chain, *args)` on the chain thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, self.chain, *args))

    async def open(self, params: ChainParams) -> None:
        """Open the chain (created with `params` if there is none) on the chain thread, where
        its connection is used from then on."""
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Condition()
        self.chain = await loop.run_in_executor(self._executor, Chain.open_or_create, self.chain_path, params)
        self.tip = await self.on_chain(read_tip)

    async def close_waiters(self) -> None:
        """Shutting down: long polls return now, so the server can finish its requests."""
        self.closing = True
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def close(self) -> None:
        await self.close_waiters()
        if self.chain is not None:
            await self.on_chain(Chain.close)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ templates and long polls

    @property
    def longpollid(self) -> str:
        assert self.tip is not None
        return longpoll_id(self.tip.hash, self.mempool.sequence)

    def template(self) -> dict:
        """The current template, built once per tip and mempool change."""
        lpid = self.longpollid
        if self._template is None or self._template[0] != lpid:
            txs = self.mempool.for_block(MAX_BLOCK_WEIGHT - COINBASE_RESERVED_WEIGHT)
            self._template = (lpid, block_template(self.tip, txs, int(time.time()), lpid))
        cached = self._template[1]
        now = int(time.time())
        if cached["curtime"] < now:  # time moves on between changes: a fresh curtime, same work
            cached = dict(cached, curtime=now)
        return cached

    async def wait_for_change(self, longpollid: str) -> None:
        """Return when the longpollid differs from `longpollid`: a new tip or new transactions."""
        assert self._changed is not None
        async with self._changed:
            await self._changed.wait_for(lambda: self.closing or self.longpollid != longpollid)

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ blocks

    async def submit_block(self, block: Block) -> BlockOutcome:
        """Store a block; what the chain made of it."""
        return (await self.submit_blocks([block]))[0]

    async def submit_blocks(self, blocks: list[Block]) -> list[BlockOutcome]:
        """Store blocks in one transaction (a sync's batch), each judged after those before it;
        each one's outcome. A failure of the file stores none and raises `ChainError`."""
        applied = await self.on_chain(_store_blocks, blocks)
        moved = any(a.outcome.change is not None for a in applied)
        if moved:  # the new tip first: listeners and long polls read it
            self.tip = await self.on_chain(read_tip)
        for a in applied:
            change = a.outcome.change
            if change is None:
                continue
            self.mempool.remove(a.mined)
            for tx in a.returned:  # transactions of blocks a reorg took off go back to the pool
                try:
                    self.mempool.add(tx, change.height)
                except MempoolRejected:
                    pass  # a full pool: the transaction is dropped, as Core may drop it too
            accepted = Accepted(change.tip, change.height, time.time())
            for listener in list(self.listeners):
                listener(accepted)
        if moved:
            await self._notify()
        return [a.outcome for a in applied]

    async def propose_block(self, block: Block) -> str | None:
        """A block proposal's verdict (BIP 23): None if it would be valid but for its proof
        of work, else Core's reason. Nothing is stored."""
        return await self.on_chain(_test_block, block)

    async def add_transaction(self, tx: Transaction) -> bool:
        added = self.mempool.add(tx, self.tip.height if self.tip else 0)
        if added:
            await self._notify()
        return added


@dataclass(frozen=True)
class _Applied:
    """A block's outcome, and for a block that moved the tip what the mempool loses and gets
    back."""

    outcome: BlockOutcome
    mined: list[bytes] = field(default_factory=list)  # txids now in the active chain
    returned: list[Transaction] = field(default_factory=list)  # of blocks a reorg took off


def _store_blocks(chain: Chain, blocks: list[Block]) -> list[_Applied]:
    """Each block's outcome and mempool change; runs on the chain thread. A block is the one
    parsed from the request or the peer: nothing of it is read back from the file after the
    commit."""
    out: list[_Applied] = []
    for block, outcome in zip(blocks, chain.add_blocks(blocks), strict=True):
        if outcome.change is not None:
            out.append(_Applied(outcome, *_mempool_delta(chain, block, outcome.change)))
            continue
        if not outcome.stored and outcome.result is not BlockResult.MISSING_PREV:
            log.info("block refused: %s", outcome.message)
        out.append(_Applied(outcome))
    return out


def _test_block(chain: Chain, block: Block) -> str | None:
    return check_proposal(chain, block)


def _mempool_delta(chain: Chain, block: Block, change: TipChange) -> tuple[list[bytes], list[Transaction]]:
    """Transactions a tip change mined, and those of blocks it took off that go back to the
    pool. The new tip is `block` itself; only the other blocks of a reorganisation are read."""
    def stored(h: bytes) -> Block:
        return block if h == block.hash else chain.block_by_hash(h)

    mined = [t.txid for h in change.connected for t in stored(h).txs[1:]]
    gone = set(mined)
    returned = [t for h in change.disconnected for t in chain.block_by_hash(h).txs[1:] if t.txid not in gone]
    return mined, returned
