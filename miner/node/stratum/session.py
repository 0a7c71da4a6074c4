"""One miner's Stratum connection: its handshake, its difficulty, and its shares.

A per-connection difficulty follows the miner's rate (`vardiff`), may be suggested by the
miner or raised by its `minimum-difficulty`, and is never above the network difficulty of the job
at work: when a new job's block target is easier than the miner's share target, the difficulty is
lowered with `mining.set_difficulty` before that job's `mining.notify` (and raised again when the
network's rises), so a miner never passes over a block. Each job's shares are judged at the
difficulty it was sent under (`ShareDifficulty`); a share that meets the block target is a block
whatever that difficulty, and is handed to the chain even when its job's tip was just replaced (a
block found a moment late may still win a race, and is never thrown away). BIP 310 version
rolling within the BIP 320 bits; every share rebuilt and hashed here, duplicates and stale work
refused with the codes pools use; a client that misbehaves dropped without the others noticing.
Lines are capped in length, and a miner that says nothing for `idle_timeout` is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from miner.chain.outcome import BlockOutcome, BlockResult
from miner.errors import MinerError
from miner.node.guard import Connection
from miner.node.log_writer import printable
from miner.node.stratum.config import BAD_MESSAGES, MAX_LINE, MAX_WORKERS, StratumConfig
from miner.node.stratum.difficulty import ShareDifficulty
from miner.node.stratum.jobs_and_shares import MAX_FUTURE, Share, ShareVerdict, StratumJob
from miner.node.stratum.stats import PoolStats
from miner.node.stratum.vardiff import VarDiff
from miner.primitives import stratum as sp

log = logging.getLogger("miner.node.stratum")


class Pool(Protocol):
    """What a session asks of the pool it belongs to: the server is one, and the session never
    imports it (the server owns the sessions; a session only reads the pool's jobs and figures
    and hands it blocks)."""

    config: StratumConfig
    stats: PoolStats
    diff1: int  # the target of share difficulty 1 under the chain's proof of work
    current: StratumJob | None  # the newest job
    jobs: Mapping[str, StratumJob]  # the jobs of the current tip

    def job(self, job_id: str) -> StratumJob | None: ...

    def tip_hash(self) -> bytes: ...

    def network_difficulty(self) -> float: ...

    async def found_block(self, job: StratumJob, share: Share, worker: str) -> BlockOutcome: ...


def block_answer(outcome: BlockOutcome) -> sp.StratumError | None:
    """The Stratum answer to a share that met the block target, from what the chain made of the
    block: accepted (None) once stored, as the tip or on a side branch; a duplicate share when
    the block was stored before; else refused with the chain's reason."""
    if outcome.result in (BlockResult.CONNECTED, BlockResult.SIDE):
        return None
    if outcome.result is BlockResult.DUPLICATE:
        return sp.StratumError(sp.DUPLICATE, "Duplicate share (the block is already stored)")
    return sp.StratumError(sp.OTHER, f"Block refused: {outcome.reason}")


class Session:
    """One miner's connection."""

    def __init__(self, server: Pool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
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
        # What vardiff, a suggestion or a minimum asks for; the difficulty in force is this capped
        # at the network difficulty of the last job sent (`difficulty`).
        self.wanted = self.vardiff.clamp(server.config.difficulty, float("inf"))
        self.last_job: StratumJob | None = None  # the newest job this miner was sent
        self.difficulty = self._in_force(server.current)
        self.announced = ShareDifficulty()  # what was sent, and what each job's shares must meet
        # Accepted shares by job id, for the duplicate check: a job's set is given back when the
        # server retires the job (a new tip, or JOBS_KEPT newer jobs), since no share of it can
        # be accepted again (44,500 shares at a tiny difficulty once stayed for good).
        self.seen: dict[str, set[tuple]] = {}
        self.bad = 0
        self.refused_in_a_row = 0  # refused shares since the last accepted one

    # ------------------------------------------------------------------ writing

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            await asyncio.wait_for(self.writer.drain(), self.server.config.write_timeout)
        except (asyncio.TimeoutError, ConnectionError):
            self.writer.transport.abort()  # a miner that does not read loses its slot

    async def push_work(self, job: StratumJob, clean: bool) -> None:
        """set_difficulty when the difficulty for this job differs from the last one sent (lowered
        to the job's network difficulty if it is below what the miner wants), then the job."""
        self._retire_seen()
        new_tip = self.last_job is None or job.job.prev_hash != self.last_job.job.prev_hash
        self.last_job = job
        self.difficulty = self._in_force(job)
        out = b""
        if self.announced.sent != self.difficulty:
            out += sp.notification("mining.set_difficulty", [self.difficulty])
            self.announced.announced(self.difficulty)
        out += sp.notification("mining.notify", job.notify_params(clean))
        self.announced.job_sent(job.job_id, clean or new_tip)
        await self.send(out)

    # ------------------------------------------------------------------ reading

    async def run(self) -> None:
        try:
            while True:
                try:
                    line = await asyncio.wait_for(self.reader.readline(), self.server.config.idle_timeout)
                except (asyncio.LimitOverrunError, ValueError):
                    too_long = sp.StratumError(sp.OTHER, f"line longer than {MAX_LINE} bytes")
                    await self.send(sp.reply(None, error=too_long))
                    self._dropped("line too long", f"a line longer than {MAX_LINE} bytes")
                    return
                except asyncio.TimeoutError:
                    self._dropped("idle", f"nothing sent for {self.server.config.idle_timeout:g} s")
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                await self.conn.throttle()
                await self.handle(line)
                if self.bad >= BAD_MESSAGES:
                    self._dropped("bad requests", f"{self.bad} malformed or refused requests")
                    return
                if self.refused_in_a_row >= self.server.config.refused_run:
                    self._dropped("refused shares", f"{self.refused_in_a_row} refused shares in a row, none accepted")
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
                raise sp.StratumError(sp.OTHER, f"Unknown method {printable(method[:40])}")
            result, after = await handler(self, params)
        except (sp.StratumError, MinerError, ValueError, TypeError, OverflowError) as exc:
            if not isinstance(exc, sp.StratumError):  # a case the checks above missed: refused, not fatal
                log.warning("Stratum %s refused: %s: %s", method[:40], type(exc).__name__, exc)
                exc = sp.StratumError(sp.OTHER, "Invalid parameters")
            self.bad += exc.code in (sp.OTHER, sp.UNAUTHORIZED, sp.NOT_SUBSCRIBED)
            if method == "mining.submit":
                self.refused_in_a_row += 1
                worker = params[0] if params and isinstance(params[0], str) and params[0] in self.workers else None
                self.server.stats.share_refused(worker, exc)
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
        self.server.stats.worker(params[0])  # its hash rate is measured from now
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
                    self.wanted = max(self.wanted, self.vardiff.clamp(value, float("inf")))
                result["minimum-difficulty"] = value is not None
            else:
                result[printable(str(ext)[:40])] = False
        # A raised minimum applies at once to a miner already at work (never above the network's).
        return result, self.announce_wanted

    async def suggest_difficulty(self, params: list):
        suggested = sp.positive_number(params[0]) if params else None
        if suggested is None:
            raise sp.StratumError(sp.OTHER, "mining.suggest_difficulty takes a positive number")
        self.wanted = self.vardiff.clamp(max(suggested, self.minimum_difficulty), float("inf"))
        return True, self.announce_wanted

    async def extranonce_subscribe(self, params: list):
        return True, None

    async def submit(self, params: list):
        if not self.subscribed:
            raise sp.StratumError(sp.NOT_SUBSCRIBED, "Not subscribed")
        if len(params) < 5:
            raise sp.StratumError(sp.OTHER, f"mining.submit takes 5 parameters (worker, job id, extranonce2, "
                                            f"ntime, nonce; a sixth for version bits), not {len(params)}")
        if not isinstance(params[0], str) or params[0] not in self.workers:
            raise sp.StratumError(sp.UNAUTHORIZED, "Unauthorized worker")
        job = self.server.job(params[1]) if isinstance(params[1], str) else None
        if job is None:
            raise sp.StratumError(sp.JOB_NOT_FOUND, "Job not found (stale)")
        stale = job.job.prev_hash != self.server.tip_hash()
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
        key = (extranonce2, ntime, nonce, version)
        self._retire_seen()
        seen = self.seen.setdefault(job.job_id, set())
        if key in seen:
            raise sp.StratumError(sp.DUPLICATE, "Duplicate share")
        share = job.share(self.extranonce1, extranonce2, ntime, nonce, version)
        difficulty = self.announced.for_job(job.job_id, self.difficulty)
        if stale and share.value > job.job.target:  # only a block is worth anything on a replaced tip
            raise sp.StratumError(sp.JOB_NOT_FOUND, "Job not found (stale)")
        verdict = job.verdict(share, difficulty)  # a block first; else 23 below the difficulty in force
        if verdict is ShareVerdict.BLOCK:
            refused = block_answer(await self.server.found_block(job, share, params[0]))
            if refused is not None:  # not stored: a miner is never told a lost block was taken
                raise refused
        seen.add(key)
        self.refused_in_a_row = 0
        self.conn.productive()  # kept longest when the miners' slots run out
        credited = min(difficulty, self.server.diff1 / max(share.value, 1))
        self.server.stats.share_accepted(params[0], credited, self.server.diff1 / max(share.value, 1),
                                         verdict is ShareVerdict.BLOCK, self.difficulty)
        if stale:
            return True, None
        new = self.vardiff.record(credited, self.difficulty, float("inf"), time.monotonic())
        after = None
        if new is not None:
            self.wanted = max(new, self.vardiff.clamp(self.minimum_difficulty, float("inf")))
            after = self.announce_wanted
        if log.isEnabledFor(logging.DEBUG):
            log.debug("share %s from %s: %s", share.hash[::-1].hex()[:16], params[0], verdict.value)
        return True, after

    async def announce_wanted(self) -> None:
        """A miner at work gets the difficulty it now wants, capped at its job's network
        difficulty; one not yet sent work gets it with its first job."""
        if self.last_job is not None:
            await self.change_difficulty(self._in_force(self.last_job))

    async def change_difficulty(self, difficulty: float) -> None:
        """Announce a new difficulty. Miners apply it to what they find next, but shares found
        before the message arrived are still in flight: those at the old difficulty are
        accepted until the next job is sent."""
        if difficulty == self.announced.sent:
            return
        self.announced.announced(difficulty)
        self.difficulty = difficulty
        await self.send(sp.notification("mining.set_difficulty", [difficulty]))

    def _dropped(self, reason: str, detail: str) -> None:
        """The server ends this connection: counted by reason (getstratuminfo, metrics) and logged."""
        self.server.stats.connection_dropped(reason)
        peer = self.writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "a miner"
        log.warning("Stratum connection from %s (%s) dropped: %s", where,
                    ", ".join(sorted(self.workers)[:3]) or "no worker", detail)

    def _retire_seen(self) -> None:
        """Give back the accepted-share sets of jobs the server no longer keeps on its tip."""
        for job_id in [j for j in self.seen if j not in self.server.jobs]:
            del self.seen[job_id]

    def _in_force(self, job: StratumJob | None) -> float:
        """What this miner wants, within vardiff's bounds and never above `job`'s network
        difficulty (the node's next block's when there is no job yet)."""
        network = job.network_difficulty if job is not None else self.server.network_difficulty()
        return self.vardiff.clamp(self.wanted, network)


_METHODS = {
    "mining.subscribe": Session.subscribe,
    "mining.authorize": Session.authorize,
    "mining.configure": Session.configure,
    "mining.suggest_difficulty": Session.suggest_difficulty,
    "mining.extranonce.subscribe": Session.extranonce_subscribe,
    "mining.submit": Session.submit,
}
