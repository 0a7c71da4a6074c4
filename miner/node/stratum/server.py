"""The node's Stratum v1 server: miners connect, get work cut from the node's own template, and
submit shares; a share that meets the block target is a block for the chain.

What a pool must handle (ckpool's stratifier is the model): a unique extranonce1 per connection
so no two miners hash the same header; work pushed the moment the tip changes (`clean_jobs`)
and when new transactions arrive (at most every few seconds); a per-connection difficulty that
follows the miner's rate (`vardiff`), that a miner may suggest, and whose previous value is
honoured until the next job (miners in the field send shares found before the change); BIP 310
version rolling within the BIP 320 bits; every share rebuilt and hashed here, duplicates and
stale work refused with the codes pools use; and a client that misbehaves dropped without the
others noticing. Connections go through the node's guard (cap, rate), lines are capped in
length, and a miner that says nothing for `idle_timeout` is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from typing import Any

from miner.errors import MinerError
from miner.mining.template import TemplateError
from miner.node.guard import Connection, Guard
from miner.node.service import NodeService
from miner.node.stratum.config import (
    BAD_MESSAGES,
    JOBS_KEPT,
    MAX_LINE,
    MAX_WORKERS,
    MIN_REFRESH,
    ShareCounts,
    StratumConfig,
)
from miner.node.stratum.jobs import MAX_FUTURE, StratumJob
from miner.node.stratum.vardiff import VarDiff
from miner.primitives import stratum as sp
from miner.primitives.compact import difficulty

log = logging.getLogger("miner.node.stratum")

class Session:
    """One miner's connection."""

    def __init__(self, server: StratumServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conn: Connection, extranonce1: bytes):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.extranonce1 = extranonce1
        self.subscribed = False
        self.workers: set[str] = set()
        self.version_mask = 0  # until mining.configure negotiates version rolling
        self.minimum_difficulty = 0.0
        now = time.monotonic()
        self.vardiff = VarDiff(server.config.vardiff, now)
        self.difficulty = self._clamp(server.config.difficulty)
        self.previous_difficulty: float | None = None  # honoured until the next job
        self.sent_difficulty: float | None = None
        self.seen: set[tuple] = set()  # shares of the current tip's jobs
        self.seen_tip: bytes | None = None
        self.bad = 0

    # ------------------------------------------------------------------ writing

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            await asyncio.wait_for(self.writer.drain(), self.server.config.write_timeout)
        except (asyncio.TimeoutError, ConnectionError):
            self.writer.transport.abort()  # a miner that does not read loses its slot

    async def push_work(self, job: StratumJob, clean: bool) -> None:
        """set_difficulty when it changed, then the job."""
        if job.job.prev_hash != self.seen_tip:  # a new tip: no earlier share can come again
            self.seen.clear()
            self.seen_tip = job.job.prev_hash
        out = b""
        if self.sent_difficulty != self.difficulty:
            out += sp.notification("mining.set_difficulty", [self.difficulty])
            self.sent_difficulty = self.difficulty
        out += sp.notification("mining.notify", job.notify_params(clean))
        self.previous_difficulty = None
        await self.send(out)

    # ------------------------------------------------------------------ reading

    async def run(self) -> None:
        try:
            while True:
                try:
                    line = await asyncio.wait_for(self.reader.readline(), self.server.config.idle_timeout)
                except (asyncio.LimitOverrunError, ValueError):
                    await self.send(sp.reply(None, error=sp.StratumError(sp.OTHER, f"line longer than {MAX_LINE} bytes")))
                    return
                except asyncio.TimeoutError:
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                await self.conn.throttle()
                await self.handle(line)
                if self.bad >= BAD_MESSAGES:
                    return
        except ConnectionError:
            return

    async def handle(self, line: bytes) -> None:
        try:
            rid, method, params = sp.parse_line(line)
        except sp.StratumError as exc:
            self.bad += 1
            await self.send(sp.reply(None, error=exc))
            return
        handler = _METHODS.get(method)
        try:
            if handler is None:
                raise sp.StratumError(sp.OTHER, f"Unknown method {method[:40]}")
            result, after = await handler(self, params)
        except (sp.StratumError, MinerError, ValueError, TypeError, OverflowError) as exc:
            if not isinstance(exc, sp.StratumError):  # a case the checks above missed: refused, not fatal
                log.warning("Stratum %s refused: %s: %s", method[:40], type(exc).__name__, exc)
                exc = sp.StratumError(sp.OTHER, "Invalid parameters")
            self.bad += exc.code in (sp.OTHER, sp.UNAUTHORIZED, sp.NOT_SUBSCRIBED)
            self.server.count_refusal(exc.code)
            await self.send(sp.reply(rid, error=exc))
            return
        await self.send(sp.reply(rid, result))
        if after is not None:
            await after()

    async def _send_work_if_ready(self) -> None:
        if self.subscribed and self.workers and self.server.current is not None:
            await self.push_work(self.server.current, clean=True)

    # ------------------------------------------------------------------ methods

    async def subscribe(self, params: list):
        self.subscribed = True
        sid = self.extranonce1.hex()
        result = [[["mining.set_difficulty", sid], ["mining.notify", sid]], self.extranonce1.hex(),
                  self.server.config.extranonce2_size]
        return result, self._send_work_if_ready

    async def authorize(self, params: list):
        if not params or not isinstance(params[0], str) or not params[0] or len(params[0]) > 128:
            raise sp.StratumError(sp.UNAUTHORIZED, "a worker name (user.worker) is required")
        if len(self.workers) >= MAX_WORKERS and params[0] not in self.workers:
            raise sp.StratumError(sp.UNAUTHORIZED, f"at most {MAX_WORKERS} workers a connection")
        if not self.conn.settle():
            raise sp.StratumError(sp.OTHER, "Server full: too many miners")
        self.workers.add(params[0])
        self.conn.begin()  # a miner may be silent between shares for minutes: our own idle limit applies
        return True, self._send_work_if_ready

    async def configure(self, params: list):
        if len(params) < 1 or not isinstance(params[0], list):
            raise sp.StratumError(sp.OTHER, "mining.configure takes [extensions, parameters]")
        options = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        result: dict[str, Any] = {}
        for ext in params[0]:
            if ext == "version-rolling":
                try:
                    asked = int(options.get("version-rolling.mask", "ffffffff"), 16)
                except (TypeError, ValueError):
                    raise sp.StratumError(sp.OTHER, "version-rolling.mask must be hex") from None
                self.version_mask = asked & self.server.config.version_mask
                result["version-rolling"] = True
                result["version-rolling.mask"] = sp.word_hex(self.version_mask)
            elif ext == "minimum-difficulty":
                value = sp.positive_number(options.get("minimum-difficulty.value"))
                if value is not None:
                    self.minimum_difficulty = value
                    self.difficulty = max(self.difficulty, self._clamp(value))
                result["minimum-difficulty"] = value is not None
            else:
                result[str(ext)[:40]] = False

        async def announce() -> None:  # a raised minimum applies at once to a miner already at work
            if self.sent_difficulty is not None and self.difficulty != self.sent_difficulty:
                await self.change_difficulty(self.difficulty)
        return result, announce

    async def suggest_difficulty(self, params: list):
        suggested = sp.positive_number(params[0]) if params else None
        if suggested is None:
            raise sp.StratumError(sp.OTHER, "mining.suggest_difficulty takes a positive number")
        self.difficulty = self._clamp(max(suggested, self.minimum_difficulty))

        async def announce() -> None:
            if self.subscribed and self.workers and self.sent_difficulty is not None:
                await self.change_difficulty(self.difficulty)
        return True, announce

    async def extranonce_subscribe(self, params: list):
        return True, None

    async def submit(self, params: list):
        if not self.subscribed:
            raise sp.StratumError(sp.NOT_SUBSCRIBED, "Not subscribed")
        if len(params) < 5 or not isinstance(params[0], str) or params[0] not in self.workers:
            raise sp.StratumError(sp.UNAUTHORIZED, "Unauthorized worker")
        job = self.server.jobs.get(params[1]) if isinstance(params[1], str) else None
        if job is None or job.job.prev_hash != self.server.service.tip.hash:
            raise sp.StratumError(sp.JOB_NOT_FOUND, "Job not found (stale)")
        extranonce2 = sp.parse_hex(params[2], self.server.config.extranonce2_size, "extranonce2")
        ntime = sp.parse_word(params[3], "ntime")
        nonce = sp.parse_word(params[4], "nonce")
        version = job.job.version & 0xFFFFFFFF
        if len(params) > 5 and params[5] is not None:
            bits = sp.parse_word(params[5], "version bits")
            if bits & ~self.version_mask:
                raise sp.StratumError(sp.OTHER, f"version bits {bits:08x} outside the mask {self.version_mask:08x}")
            version = (version & ~self.version_mask) | bits
        if not job.mintime <= ntime <= int(time.time()) + MAX_FUTURE:
            raise sp.StratumError(sp.OTHER, "ntime out of range")
        key = (params[1], extranonce2, ntime, nonce, version)
        if key in self.seen:
            raise sp.StratumError(sp.DUPLICATE, "Duplicate share")
        share = job.share(self.extranonce1, extranonce2, ntime, nonce, version)
        difficulty = self.difficulty if self.previous_difficulty is None else min(self.difficulty,
                                                                                  self.previous_difficulty)
        if share.value > sp.difficulty_to_target(difficulty):
            raise sp.StratumError(sp.LOW_DIFFICULTY, "Low difficulty share")
        self.seen.add(key)
        verdict = "share"
        if share.value <= job.job.target:
            verdict = await self.server.found_block(job, share)
        self.server.counts.accepted += 1
        new = self.vardiff.record(difficulty, self.difficulty, self.server.network_difficulty(),
                                  time.monotonic())
        after = None
        if new is not None:
            new = max(new, self._clamp(self.minimum_difficulty)) if self.minimum_difficulty else new

            async def after() -> None:
                await self.change_difficulty(new)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("share %s from %s: %s", share.hash[::-1].hex()[:16], params[0], verdict)
        return True, after

    async def change_difficulty(self, difficulty: float) -> None:
        """Announce a new difficulty. Miners apply it to what they find next, but shares found
        before the message arrived are still in flight: those at the old difficulty are
        accepted until the next job is sent."""
        if difficulty == self.sent_difficulty:
            return
        self.previous_difficulty = self.sent_difficulty
        self.difficulty = difficulty
        await self.send(sp.notification("mining.set_difficulty", [difficulty]))
        self.sent_difficulty = difficulty

    def _clamp(self, difficulty: float) -> float:
        return self.vardiff.clamp(difficulty, self.server.network_difficulty())


_METHODS = {
    "mining.subscribe": Session.subscribe,
    "mining.authorize": Session.authorize,
    "mining.configure": Session.configure,
    "mining.suggest_difficulty": Session.suggest_difficulty,
    "mining.extranonce.subscribe": Session.extranonce_subscribe,
    "mining.submit": Session.submit,
}


class StratumServer:
    def __init__(self, service: NodeService, guard: Guard, config: StratumConfig | None = None):
        self.service = service
        self.guard = guard
        self.config = config = config or StratumConfig()
        self.sessions: set[Session] = set()
        self.jobs: OrderedDict[str, StratumJob] = OrderedDict()
        self.current: StratumJob | None = None
        self.counts = ShareCounts()
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
            self._server = await loop.create_server(self.guard.protocol_factory(factory), host, port,
                                                    backlog=128, reuse_address=True)
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
        return difficulty(self.service.tip.next_target) if self.service.tip else 1.0

    async def _new_job(self) -> tuple[StratumJob, bool] | None:
        template = self.service.template()
        self._job_counter += 1
        try:
            job = StratumJob.from_template(f"{self._job_counter:x}", template, self.config.payout_script,
                                           self.config.message, self.config.extranonce1_size,
                                           self.config.extranonce2_size)
        except TemplateError as exc:
            log.warning("no Stratum job from the template: %s", exc)
            return None
        clean = self.current is None or self.current.job.prev_hash != job.job.prev_hash
        if clean:
            self.jobs.clear()
        self.jobs[job.job_id] = job
        while len(self.jobs) > JOBS_KEPT:
            self.jobs.popitem(last=False)
        self.current = job
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

    async def broadcast(self, job: StratumJob, clean: bool) -> None:
        """Each miner's copy is written in a task of its own: one that does not read holds up
        nobody else, and not the next job either."""
        for session in [s for s in self.sessions if s.subscribed and s.workers]:
            task = asyncio.get_running_loop().create_task(session.push_work(job, clean))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def found_block(self, job: StratumJob, share) -> str:
        verdict = await self.service.submit_block(job.block(share))
        if verdict is None:
            self.counts.blocks += 1
            return "block"
        log.info("a share met the block target but the block was refused: %s", verdict)
        return f"block {verdict}"

    def count_refusal(self, code: int) -> None:
        self.counts.refused[code] = self.counts.refused.get(code, 0) + 1
