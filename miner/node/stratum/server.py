"""The node's Stratum v1 server: miners connect, get work cut from the node's own template, and
submit shares; a share that meets the block target is a block for the chain.

What a pool must handle (ckpool's stratifier is the model): a unique extranonce1 per connection
so no two miners hash the same header; work pushed the moment the tip changes (`clean_jobs`)
and when new transactions arrive (at most every few seconds); and each miner's connection
(`session`) served on its own. Connections go through the node's guard, inside the Stratum
face's own budget (`--stratum-max-miners`), at its rate.

Blocks are never lost at the pool: a share that meets the block target goes to the chain whatever
the share difficulty, also for a job of the tip just replaced (kept a while as `retired`), and the
miner is told it was accepted only once the chain has stored it. Which of the pool's blocks are on
the active chain and which became side branches (orphaned) is counted again at every tip change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict

from miner.chain.outcome import BlockOutcome, BlockResult
from miner.errors import MinerError
from miner.mining.template import TemplateError
from miner.node.guard import Guard
from miner.node.limits import STRATUM
from miner.node.service import NodeService
from miner.node.stratum.config import (
    JOBS_KEPT,
    MAX_LINE,
    MIN_REFRESH,
    StratumConfig,
)
from miner.node.stratum.jobs_and_shares import Share, StratumJob
from miner.node.stratum.session import Session
from miner.node.stratum.stats import HASHES_PER_DIFFICULTY, PoolStats
from miner.primitives import stratum as sp

log = logging.getLogger("miner.node.stratum")


class StratumServer:
    """The listening socket, the sessions, the current jobs, and the pool's statistics."""

    def __init__(self, service: NodeService, guard: Guard, config: StratumConfig | None = None):
        self.service = service
        self.guard = guard
        self.config = config = config or StratumConfig()
        # The chain's proof of work: shares are judged by its hash, and share difficulty is
        # counted as its pools count it (scrypt's difficulty 1 is 65,536 times easier).
        self.pow = service.chain.params.pow if service.chain is not None else "sha256d"
        self.diff1 = sp.diff1_target(self.pow)
        self.sessions: set[Session] = set()
        self.jobs: OrderedDict[str, StratumJob] = OrderedDict()  # on the current tip
        self.retired: OrderedDict[str, StratumJob] = OrderedDict()  # of earlier tips: a block may still come
        self.current: StratumJob | None = None
        # 2^32 hashes a difficulty-1 share, as every SHA-256d pool counts it; 2^16 for scrypt.
        self.stats = PoolStats(hashes_per_difficulty=HASHES_PER_DIFFICULTY * sp.DIFF1_TARGET / self.diff1)
        self.job_made_at = 0.0  # wall clock of the current job
        self._server: asyncio.base_events.Server | None = None
        self._refresher: asyncio.Task | None = None
        self._next_extranonce1 = secrets.randbits(8 * config.extranonce1_size)
        self._job_counter = 0
        self._sending: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        await self._new_job()

        def factory() -> asyncio.Protocol:
            reader = asyncio.StreamReader(limit=MAX_LINE)
            return asyncio.StreamReaderProtocol(reader, self._connected)
        try:
            self._server = await self.guard.listen(factory, host, port, STRATUM)
        except OSError as exc:
            raise MinerError(f"cannot listen for Stratum on {host}:{port}: {exc.strerror}") from None
        self._refresher = loop.create_task(self._refresh())
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Tell every miner to reconnect (it will find the node again when it is back), then stop."""
        if self._server is not None:
            self._server.close()
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        reconnect = sp.notification("client.reconnect", [])
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                session.writer.write(reconnect)
                session.writer.close()

    # ------------------------------------------------------------------ connections

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.guard.connection(writer.transport)
        if conn is None:
            writer.transport.abort()
            return
        extranonce1 = self._next_extranonce1.to_bytes(self.config.extranonce1_size, "big")
        self._next_extranonce1 = (self._next_extranonce1 + 1) % (1 << (8 * self.config.extranonce1_size))
        session = Session(self, reader, writer, conn, extranonce1)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            if not writer.is_closing():
                writer.transport.abort()

    # ------------------------------------------------------------------ work

    def network_difficulty(self) -> float:
        return self.diff1 / self.service.tip.next_target if self.service.tip else 1.0

    async def _new_job(self) -> tuple[StratumJob, bool] | None:
        template = self.service.template()
        self._job_counter += 1
        try:
            job = StratumJob.from_template(f"{self._job_counter:x}", template, self.config.payout_script,
                                           self.config.message, self.config.extranonce1_size,
                                           self.config.extranonce2_size, self.pow)
        except TemplateError as exc:
            log.warning("no Stratum job from the template: %s", exc)
            return None
        clean = self.current is None or self.current.job.prev_hash != job.job.prev_hash
        if clean:
            self.retired.update(self.jobs)
            while len(self.retired) > JOBS_KEPT:
                self.retired.popitem(last=False)
            self.jobs.clear()
        self.jobs[job.job_id] = job
        while len(self.jobs) > JOBS_KEPT:
            self.jobs.popitem(last=False)
        self.current = job
        self.job_made_at = time.time()
        return job, clean

    async def _refresh(self) -> None:
        """New work when the node's template changes: at once for a new tip, at most every
        MIN_REFRESH seconds for new transactions alone."""
        last = time.monotonic()
        while not self.service.closing:
            lpid = self.service.longpollid
            await self.service.wait_for_change(lpid)
            if self.service.closing:
                return
            tip_moved = self.current is not None and self.service.tip.hash != self.current.job.prev_hash
            if not tip_moved:
                await asyncio.sleep(max(0.0, MIN_REFRESH - (time.monotonic() - last)))
            made = await self._new_job()
            last = time.monotonic()
            if made is not None:
                await self.broadcast(*made)
            if tip_moved:
                await self.recount_blocks()

    async def broadcast(self, job: StratumJob, clean: bool) -> None:
        """Each miner's copy is written in a task of its own: one that does not read holds up
        nobody else, and not the next job either."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        tasks = []
        for session in [s for s in self.sessions if s.subscribed and s.workers]:
            task = loop.create_task(session.push_work(job, clean))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
            tasks.append(task)
        if tasks:
            timer = loop.create_task(self._time_broadcast(tasks, started))
            self._sending.add(timer)
            timer.add_done_callback(self._sending.discard)

    async def _time_broadcast(self, tasks: list[asyncio.Task], started: float) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        self.stats.broadcast(time.monotonic() - started)

    def tip_hash(self) -> bytes:
        """The chain's tip: a share of a job on another block is stale."""
        return self.service.tip.hash

    def job(self, job_id: str) -> StratumJob | None:
        """A job a share may name: one of the current tip's, or of an earlier tip (its shares are
        stale, but a block among them is still handed to the chain)."""
        return self.jobs.get(job_id) or self.retired.get(job_id)

    async def found_block(self, job: StratumJob, share: Share, worker: str) -> BlockOutcome:
        """Hand a share that meets the block target to the chain; what the chain made of it (the
        session answers the miner from it, `session.block_answer`). A block stored, as the tip or
        on a side branch, is counted as the pool's."""
        block = job.block(share)
        outcome = await self.service.submit_block(block)
        if outcome.result is BlockResult.DUPLICATE:
            return outcome
        if outcome.result not in (BlockResult.CONNECTED, BlockResult.SIDE):
            log.warning("a share from %s met the block target but the chain refused the block: %s",
                        worker, outcome.reason)
            return outcome
        self.stats.block_found(block.hash, job.job.height, worker)
        log.info("pool block %s at height %d from %s%s", block.hash[::-1].hex(), job.job.height, worker,
                 "" if outcome.result is BlockResult.CONNECTED else " (stored on a side branch)")
        await self.recount_blocks()
        return outcome

    async def recount_blocks(self) -> None:
        """Which of the pool's blocks are on the active chain now: a reorg may orphan some (or
        bring one back), and pools show the two apart."""
        found = self.stats.found_hashes()
        if not found or self.service.chain is None:
            return
        active = await self.service.on_chain(_active_among, found)
        for block_hash, height in self.stats.block_status(active):
            log.warning("pool block %s at height %d is no longer on the active chain (orphaned)",
                        block_hash[::-1].hex(), height)

    def workers_connected(self) -> set[str]:
        return {w for s in self.sessions for w in s.workers}

    def report(self) -> dict:
        """The pool's figures, as `getstratuminfo` returns them."""
        return self.stats.report(len(self.sessions), self.workers_connected(), self.network_difficulty(),
                                 time.time() - self.job_made_at if self.job_made_at else None)


def _active_among(chain, hashes: list[bytes]) -> set[bytes]:
    """The hashes of `hashes` on the active chain (chain thread)."""
    return {h for h in hashes if chain.is_active(h)}
