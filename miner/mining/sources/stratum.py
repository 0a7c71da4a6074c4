"""A Stratum v1 pool as a work source: jobs from its `mining.notify`, shares to `mining.submit`.

Several pools may be given (`--url` repeated): they are tried in order. When the connection in
use is lost, the search for a pool starts again from the first; a full round that reaches none
waits before the next (0.5 s, doubling to 30 s), so a pool that is restarting is not hammered,
and so does a pool that drops us soon after authorizing (or sends something malformed). Rounds go
on forever by default, as cpuminer's (`--retries N` gives up after N failed rounds in a row).
While a backup is in use, the first pools are looked at every `retry_primary` seconds and the
miner goes back to the first one that answers, as cgminer's failover does.

A watchdog looks for a stalled pool: no new job and no accepted share for `stall_factor` times
the time a share is expected at the pool's difficulty and our hash rate (and at least a minute)
means the pool is not working for us, whatever its socket says. The connection is then dropped
and the next pool in order is tried (the same one, subscribing again, when there is one), and
the first is gone back to as usual.

Nothing is mined while no pool is connected (the work of a lost pool is worthless: its
extranonce1 belongs to that connection). A pool's job never ends at a share: the coordinator
searches on (`Job.shares`), and each share is sent as it is found, with the pool's verdict
reported. A share that also meets the block target is reported as a block. A share found for a
job that a later `mining.notify` with clean_jobs=true voided (or of an earlier block) is dropped
unsent; with clean_jobs=false the earlier jobs stay live and their shares are sent.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from miner.consensus.pow import algorithm
from miner.errors import InvalidInput, MinerError
from miner.mining.retry import FOREVER, RetryPolicy
from miner.mining.sources.base import Submitted
from miner.mining.sources.pool_link import PoolLink
from miner.mining.sources.pool_url import PoolUrl
from miner.mining.sources.pool_wire import LOST
from miner.mining.work import Job, Solution
from miner.primitives.compact import bits_to_target

log = logging.getLogger(__name__)

AGENT = "pow-miner/0.1"
HANDSHAKE_TIMEOUT = 10.0  # s for the pool to authorize us
SUBMIT_TIMEOUT = 10.0  # s for the pool to judge a share
RETRY_PRIMARY = 30.0  # s between looks at a better pool while on a backup
STALL_FACTOR = 10.0  # expected share times with no new job and no accepted share: a stalled pool
STALL_FLOOR = 60.0  # s: never sooner than this
# s: a session that gave work and lasted this long was not a failure: the back-off starts over,
# so a pool restarted every few seconds is reconnected to at once; one that drops us sooner
# (or sends no work) is asked again only after the growing pause.
HEALTHY = 5.0


class StratumSource:
    """Work from the first reachable of `urls`; `open()` connects before anything else starts."""

    def __init__(self, urls: list[PoolUrl], on_event: Callable[[dict], None] | None = None,
                 retry_primary: float = RETRY_PRIMARY, roll_version: bool = True, agent: str = AGENT,
                 pow: str = "sha256d", retries: int = FOREVER, stall_factor: float = STALL_FACTOR,
                 stall_floor: float = STALL_FLOOR, healthy: float = HEALTHY,
                 suggest_difficulty: float | None = None):
        """`retries`: failed rounds over every pool in a row before giving up (-1: never);
        `stall_factor` 0 turns the watchdog off, which needs the hash rate (`measure_rate`)."""
        if not urls:
            raise ValueError("at least one pool URL is needed")
        self.urls = list(urls)
        self.retry = RetryPolicy(retries)
        self.stall_factor = stall_factor
        self.stall_floor = stall_floor
        self.healthy = healthy
        self.suggest_difficulty = suggest_difficulty
        self._rate: Callable[[], float] = lambda: 0.0
        self.failure: MinerError | None = None  # the retries are spent: the run ends with this
        self.retry_primary = retry_primary
        self.roll_version = roll_version
        self.agent = agent
        self.pow = pow
        self._on_event = on_event or (lambda event: None)
        self._on_job: Callable[[Job | None], None] | None = None
        self._latest: Job | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._link: PoolLink | None = None
        self._serial = 0
        self._connected = threading.Event()
        self._first_round_done = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ WorkSource

    def open(self, timeout: float = 30.0) -> PoolUrl:
        """Start the connection thread and wait for a pool to authorize us, or for a first round
        over them all to fail: then MinerError naming each pool's reason when no retry is left,
        else the search goes on in the background (mining waits for work) and the first URL is
        returned."""
        self._thread = threading.Thread(target=self._run, name="stratum", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._connected.is_set():
            if self.failure is not None:
                self.stop()
                raise self.failure
            if self._first_round_done.is_set() or time.monotonic() > deadline:
                return self.urls[0]
            self._connected.wait(0.05)
        link = self._link
        return link.url if link is not None else self.urls[0]

    def measure_rate(self, rate: Callable[[], float]) -> None:
        """Where the watchdog reads our hash rate (hashes a second) from."""
        self._rate = rate

    def start(self, on_job: Callable[[Job | None], None]) -> None:
        with self._lock:
            self._on_job = on_job
            if self._latest is not None:
                on_job(self._latest)

    def solved(self, job: Job) -> None:
        """A pool's job goes on after a share; the pool sends new work when a block is found."""

    def stop(self) -> None:
        self._stop.set()
        link = self._link
        if link is not None:
            link.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def submit(self, solution: Solution) -> Submitted | None:
        """Send the share and wait for the pool's verdict ("accepted" or the pool's reason, in
        its words). A hit that meets the block target but not the share target is sent only as
        `PoolLink.take_block_only` allows (once a tip, to a pool not known to refuse them)."""
        job = solution.job
        value = int.from_bytes(algorithm(job.pow).hash(solution.header.serialize()), "little")
        kind = "block" if value <= _block_target(job.bits) else "share"
        link = self._link
        if link is None or not job.job_id.startswith(f"{link.serial}:"):
            return Submitted(job.height, False, "stale: the pool connection it was for is gone", kind)
        current = link.current
        if current is not None and current.prev_hash != job.prev_hash:
            return None  # the pool has moved to a new block: a share of the old one is dropped unsent
        if not link.is_live(job):
            return None  # a clean_jobs notify came after its job: the pool would only call it stale
        block_only = kind == "block" and value > link.share_target()
        if block_only and not link.take_block_only(job):
            return None  # not a share, and the pool would refuse it or has one for this tip already
        reply = link.send("mining.submit", link.submit_params(job, solution.extranonce, solution.nonce))
        if not reply.done.wait(SUBMIT_TIMEOUT):
            return Submitted(job.height, False, f"no answer from the pool in {SUBMIT_TIMEOUT:.0f} s", kind)
        reason = reply.refused
        if reason is None:
            link.share_accepted()
        if block_only and reply.error != LOST:
            link.block_only_judged(reason is None)
        return Submitted(job.height, reason is None, "accepted" if reason is None else reason, kind)

    # ------------------------------------------------------------------ the connection thread

    def _announce(self, job: Job | None) -> None:
        with self._lock:
            self._latest = job
            if self._on_job is not None:
                self._on_job(job)

    def _link_event(self, event: dict) -> None:
        if event.get("status") == "connected":
            self._connected.set()
        self._on_event(event)

    def _run(self) -> None:
        index, failures, failed_rounds = 0, [], 0
        waits = self._waits()
        while not self._stop.is_set():
            url = self.urls[index]
            outcome = self._session(url, index)
            if self._stop.is_set():
                return
            if outcome.authorized:
                failures, failed_rounds = [], 0
                if outcome.reconnect is not None:  # the pool's own client.reconnect: same host
                    port, wait = outcome.reconnect
                    self.urls[index] = PoolUrl(url.host, port, url.user, url.password)
                    self._stop.wait(wait)
                    continue
                if (outcome.had_work and outcome.lasted >= self.healthy) or outcome.going_back:
                    waits = self._waits()
                else:  # dropped soon after authorizing: not hammered either
                    self._stop.wait(next(waits))
                # lost, or a better pool is back: the search starts from the first; a stalled
                # pool is left for the next one in order (the same one when it is alone)
                index = (index + 1) % len(self.urls) if outcome.stalled else 0
                continue
            failures.append(f"{url.display}: {outcome.reason}")
            index += 1
            if index == len(self.urls):
                failed_rounds += 1
                reasons = "; ".join(failures)
                if self.retry.gives_up_after(failed_rounds):
                    self.failure = MinerError(f"cannot mine at any pool: {reasons}")
                self._first_round_done.set()
                if self.failure is not None:
                    return
                wait = next(waits)
                self._on_event({"event": "pool", "status": "retrying", "url": self.urls[0].display,
                                "reason": reasons, "wait": wait})
                index, failures = 0, []
                self._stop.wait(wait)

    def _waits(self):
        """The pauses between failed rounds: 0.5 s doubling to 30 s, for ever (the retries are
        counted by rounds, not here)."""
        return RetryPolicy(FOREVER).waits()

    def _stall_limit(self, link: PoolLink) -> float | None:
        """Seconds without a new job or an accepted share after which the pool is stalled; None
        while the hash rate is not known or the watchdog is off."""
        rate = self._rate()
        if self.stall_factor <= 0 or rate <= 0:
            return None
        expected = (1 << 256) / (link.share_target() + 1) / rate
        return max(self.stall_floor, self.stall_factor * expected)

    def _session(self, url: PoolUrl, index: int) -> _Outcome:
        try:
            self._serial += 1
            link = PoolLink(url, self._serial, self.agent, self._announce, self._link_event, self.roll_version,
                            self.pow, self.suggest_difficulty)
        except OSError as exc:
            return _Outcome(False, f"cannot connect ({exc.strerror or exc})")
        self._link = link
        link.handshake()
        began = time.monotonic()
        next_look = began + self.retry_primary

        ended: list[str] = []  # why should_end ended it: "stalled", "going back"

        def should_end() -> str | None:
            nonlocal next_look
            now = time.monotonic()
            if not link.authorized.is_set():
                return f"no authorization in {HANDSHAKE_TIMEOUT:.0f} s" if now - began > HANDSHAKE_TIMEOUT else None
            limit = self._stall_limit(link)
            if limit is not None and now - link.last_progress > limit:
                ended.append("stalled")
                seconds = f"{limit:.0f}" if limit >= 10 else f"{limit:.1f}"
                return (f"stalled: no new job and no accepted share in {seconds} s; subscribing "
                        f"{'again' if len(self.urls) == 1 else 'at the next pool'}")
            if index > 0 and now >= next_look:
                next_look = now + self.retry_primary
                better = self._first_reachable(index)
                if better is not None:
                    ended.append("going back")
                    return f"going back to {better.display}"
            return None

        reason = link.run(self._stop, should_end)
        authorized = link.authorized.is_set()
        self._link = None
        if authorized and not self._stop.is_set():
            self._announce(None)  # nothing to mine until a pool gives work again
            self._on_event({"event": "pool", "status": "disconnected", "url": url.display, "reason": reason})
            log.warning("pool %s: %s", url.display, reason)
        return _Outcome(authorized, reason, link.reconnect_to if authorized else None,
                        lasted=time.monotonic() - began, had_work=link.current is not None,
                        stalled="stalled" in ended,
                        going_back="going back" in ended)

    def _first_reachable(self, before: int) -> PoolUrl | None:
        """The first of the pools ahead of `before` that accepts a TCP connection now."""
        for url in self.urls[:before]:
            try:
                socket.create_connection((url.host, url.port), timeout=2.0).close()
                return url
            except OSError:
                continue
        return None


@dataclass
class _Outcome:
    """How a session with one pool ended."""

    authorized: bool
    reason: str
    reconnect: tuple[int, float] | None = None  # (port, wait) from the pool's client.reconnect
    lasted: float = 0.0  # s from connecting to the end
    had_work: bool = False  # the pool sent a job
    stalled: bool = False  # the watchdog ended it
    going_back: bool = False  # ended to go back to a pool before it in order


def _block_target(bits: int) -> int:
    """The block target of a pool's nbits; -1 (nothing meets it) when nbits stands for none."""
    try:
        return bits_to_target(bits)
    except (InvalidInput, ValueError):
        return -1
