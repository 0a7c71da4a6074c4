"""A Stratum v1 pool as a work source: jobs from its `mining.notify`, shares to `mining.submit`.

Several pools may be given (`--url` repeated): they are tried in order. When the connection in
use is lost, the search for a pool starts again from the first; a full round that reaches none
waits before the next (0.5 s, doubling to 30 s), so a pool that is restarting is not hammered.
While a backup is in use, the first pools are looked at every `retry_primary` seconds and the
miner goes back to the first one that answers, as cgminer's failover does.

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

from miner.errors import MinerError
from miner.mining.sources.base import Submitted
from miner.mining.sources.pool_link import PoolLink
from miner.mining.sources.pool_url import PoolUrl
from miner.mining.work import Job, Solution

log = logging.getLogger(__name__)

AGENT = "pow-miner/0.1"
HANDSHAKE_TIMEOUT = 10.0  # s for the pool to authorize us
SUBMIT_TIMEOUT = 10.0  # s for the pool to judge a share
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 30.0  # s between rounds over every pool
RETRY_PRIMARY = 30.0  # s between looks at a better pool while on a backup


class StratumSource:
    """Work from the first reachable of `urls`; `open()` connects before anything else starts."""

    def __init__(self, urls: list[PoolUrl], on_event: Callable[[dict], None] | None = None,
                 retry_primary: float = RETRY_PRIMARY, roll_version: bool = True, agent: str = AGENT,
                 pow: str = "sha256d"):
        if not urls:
            raise ValueError("at least one pool URL is needed")
        self.urls = list(urls)
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
        self._first_failures: list[str] = []
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ WorkSource

    def open(self, timeout: float = 30.0) -> PoolUrl:
        """Start the connection thread and wait for a pool to authorize us: MinerError naming each
        pool's reason when one full round over them all fails."""
        self._thread = threading.Thread(target=self._run, name="stratum", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._connected.is_set():
            if self._first_round_done.is_set() or time.monotonic() > deadline:
                self.stop()
                reasons = "; ".join(self._first_failures) or "no answer"
                raise MinerError(f"cannot mine at any pool: {reasons}")
            self._connected.wait(0.05)
        link = self._link
        return link.url if link is not None else self.urls[0]

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
        """Send the share and wait for the pool's verdict ("accepted" or its reason)."""
        job = solution.job
        kind = "block" if job.is_block(solution.extranonce, solution.nonce) else "share"
        link = self._link
        if link is None or not job.job_id.startswith(f"{link.serial}:"):
            return Submitted(job.height, False, "stale: the pool connection it was for is gone", kind)
        current = link.current
        if current is not None and current.prev_hash != job.prev_hash:
            return None  # the pool has moved to a new block: a share of the old one is dropped unsent
        if not link.is_live(job):
            return None  # a clean_jobs notify came after its job: the pool would only call it stale
        reply = link.send("mining.submit", link.submit_params(job, solution.extranonce, solution.nonce))
        if not reply.done.wait(SUBMIT_TIMEOUT):
            return Submitted(job.height, False, f"no answer from the pool in {SUBMIT_TIMEOUT:.0f} s", kind)
        reason = reply.refused
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
        index, backoff, failures = 0, FIRST_BACKOFF, []
        while not self._stop.is_set():
            url = self.urls[index]
            outcome = self._session(url, index)
            if self._stop.is_set():
                return
            if outcome.authorized:
                backoff, failures = FIRST_BACKOFF, []
                if outcome.reconnect is not None:  # the pool's own client.reconnect: same host
                    port, wait = outcome.reconnect
                    self.urls[index] = PoolUrl(url.host, port, url.user, url.password)
                    self._stop.wait(wait)
                    continue
                index = 0  # lost, or a better pool is back: the search starts from the first
                continue
            failures.append(f"{url.display}: {outcome.reason}")
            index += 1
            if index == len(self.urls):
                if not self._first_round_done.is_set():
                    self._first_failures = failures
                    self._first_round_done.set()
                index, failures = 0, []
                self._stop.wait(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF)

    def _session(self, url: PoolUrl, index: int) -> _Outcome:
        try:
            self._serial += 1
            link = PoolLink(url, self._serial, self.agent, self._announce, self._link_event, self.roll_version,
                            self.pow)
        except OSError as exc:
            return _Outcome(False, f"cannot connect ({exc.strerror or exc})")
        self._link = link
        link.handshake()
        began = time.monotonic()
        next_look = began + self.retry_primary

        def should_end() -> str | None:
            nonlocal next_look
            now = time.monotonic()
            if not link.authorized.is_set():
                return f"no authorization in {HANDSHAKE_TIMEOUT:.0f} s" if now - began > HANDSHAKE_TIMEOUT else None
            if index > 0 and now >= next_look:
                next_look = now + self.retry_primary
                better = self._first_reachable(index)
                if better is not None:
                    return f"going back to {better.display}"
            return None

        reason = link.run(self._stop, should_end)
        authorized = link.authorized.is_set()
        self._link = None
        if authorized and not self._stop.is_set():
            self._announce(None)  # nothing to mine until a pool gives work again
            self._on_event({"event": "pool", "status": "disconnected", "url": url.display, "reason": reason})
            log.warning("pool %s: %s", url.display, reason)
        return _Outcome(authorized, reason, link.reconnect_to if authorized else None)

    def _first_reachable(self, before: int) -> PoolUrl | None:
        """The first of the pools ahead of `before` that accepts a TCP connection now."""
        for url in self.urls[:before]:
            try:
                socket.create_connection((url.host, url.port), timeout=2.0).close()
                return url
            except OSError:
                continue
        return None


class _Outcome:
    def __init__(self, authorized: bool, reason: str, reconnect: tuple[int, float] | None = None):
        self.authorized = authorized
        self.reason = reason
        self.reconnect = reconnect
