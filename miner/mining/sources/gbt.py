"""A node's getblocktemplate as a work source: jobs from its templates, blocks to its submitblock.

Built against Bitcoin Core's documented fields (BIP 22/23, BIP 141), so it mines Core (regtest,
signet, testnet) as well as `miner node`; each template becomes a job through
`miner.mining.template`.

A long poll runs in its own thread: the moment the node answers with a new template (a new tip,
new transactions) the coordinator gets the new job, so stale work stops within the long poll's
round trip.

A node that restarts must not end its miners: every call is retried while the node cannot be
reached (or says it is warming up), with a pause doubling to 30 s, forever by default as
cpuminer's `--retries -1` (`retries` N gives up after N failed tries in a row, and the run ends
with the last reason). Hashing goes on with the last job meanwhile; a block found while the node
is away is submitted when it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from miner.errors import MinerError
from miner.mining.retry import FOREVER, RetryPolicy
from miner.mining.rpc_client import NodeUnreachable, RpcCallError, RpcClient
from miner.mining.sources.base import Submitted
from miner.mining.template import block_hex, job_from_template
from miner.mining.work import Job, Solution

log = logging.getLogger(__name__)

# Only what this client does: it builds its own coinbase (coinbasevalue) and long-polls.
TEMPLATE_REQUEST = {"rules": ["segwit"], "capabilities": ["coinbasevalue", "longpoll"]}
LONG_POLL_PROMPT = 0.5  # s: a long poll answered sooner with the same work did not wait
LONG_POLL_MAX_PAUSE = 2.0  # s: the longest pause between such answers
# Core's codes for "not now": RPC_IN_WARMUP, RPC_CLIENT_NOT_CONNECTED, RPC_CLIENT_IN_INITIAL_DOWNLOAD.
NOT_NOW = {-28, -9, -10}


def worth_retrying(exc: MinerError) -> bool:
    """A node away or not ready yet, as opposed to one that answered something wrong."""
    return isinstance(exc, NodeUnreachable) or (isinstance(exc, RpcCallError) and exc.code in NOT_NOW)


class TemplateSource:
    """getblocktemplate work from one node, with a long-poll thread announcing new templates."""

    def __init__(self, client: RpcClient, payout_script: bytes, message: bytes = b"pow-miner",
                 pow: str = "sha256d", retries: int = FOREVER, on_event: Callable[[dict], None] | None = None):
        self.client = client
        self.retry = RetryPolicy(retries)
        self._on_event = on_event or (lambda event: None)
        self.failure: MinerError | None = None  # the long poll's retries are spent: the run ends
        self.pow = pow  # getblocktemplate does not say; the user does (`--pow`)
        self.payout_script = payout_script
        self.message = message
        self._lock = threading.Lock()
        self.current: Job | None = None
        self._stop = threading.Event()
        self._on_job: Callable[[Job], None] = lambda job: None

    def fetch(self, longpollid: str | None = None) -> Job:
        request = dict(TEMPLATE_REQUEST)
        if longpollid is not None:
            request["longpollid"] = longpollid
        result = self._call("getblocktemplate", request, timeout=None if longpollid is not None else -1)
        job = job_from_template(result, self.payout_script, self.message)
        return job if self.pow == "sha256d" else replace(job, pow=self.pow)

    def _call(self, method: str, *params, timeout: float | None = -1):
        return self._call_retried(method, *params, timeout=timeout)[0]

    def _call_retried(self, method: str, *params, timeout: float | None = -1) -> tuple[object, bool]:
        """`client.call`'s result, retried while the node is away (see the module's docstring),
        and whether it was retried; the retries spent, or the run stopping, the last error is
        raised."""
        waits = self.retry.waits()
        retried = False
        while True:
            try:
                result = self.client.call(method, *params, timeout=timeout)
            except MinerError as exc:
                wait = next(waits, None) if worth_retrying(exc) and not self._stop.is_set() else None
                if wait is None:
                    raise
                retried = True
                self._on_event({"event": "node", "status": "retrying", "url": self.client.display_url,
                                "reason": str(exc), "wait": wait, "method": method})
                self._stop.wait(wait)
                continue
            if retried:
                self._on_event({"event": "node", "status": "reconnected", "url": self.client.display_url,
                                "method": method})
            return result, retried

    @staticmethod
    def same_work(a: Job | None, b: Job) -> bool:
        return (a is not None and a.prev_hash == b.prev_hash and a.longpoll_id == b.longpoll_id
                and a.extra_txs == b.extra_txs)

    def start(self, on_job: Callable[[Job], None]) -> None:
        self._on_job = on_job
        self._offer(self.fetch())
        threading.Thread(target=self._long_poll, name="longpoll", daemon=True).start()

    def solved(self, job: Job) -> None:
        self._offer(self.fetch(), solved=job)

    def stop(self) -> None:
        # The thread may sit in a long poll that only a new template ends; it is a daemon.
        self._stop.set()

    def _offer(self, job: Job, solved: Job | None = None) -> bool:
        """Make `job` current unless it is the same work as the current job; True if it replaced
        it. `solved`: that job was just solved, so if it is still current even the same template
        needs a fresh start (the long poll may already have replaced it: then nothing to do)."""
        with self._lock:
            restart = solved is not None and self.current is solved
            if not restart and self.same_work(self.current, job):
                return False
            self.current = job
            self._on_job(job)
            return True

    def _long_poll(self) -> None:
        pause = 0.0  # grows while a node answers long polls at once with the same work
        while not self._stop.is_set():
            current = self.current
            lpid = current.longpoll_id if current else None
            started = time.monotonic()
            try:
                job = self.fetch(lpid) if lpid else self.fetch()
            except MinerError as exc:  # retries spent, or a template that is not one: the run ends
                if not self._stop.is_set():
                    self.failure = exc
                return
            changed = not self._stop.is_set() and self._offer(job)
            if not lpid:
                self._stop.wait(1.0)  # a node without long polling: poll once a second
            elif changed or time.monotonic() - started > LONG_POLL_PROMPT:
                pause = 0.0
            else:  # an answer at once with nothing new: not a long poll, so do not spin on it
                pause = min(max(2 * pause, 0.05), LONG_POLL_MAX_PAUSE)
                self._stop.wait(pause)

    def submit(self, solution: Solution) -> Submitted:
        """submitblock's verdict, every one reported: "accepted" (Core's null) or Core's BIP 22
        reason string. Sent again while the node is away; "duplicate" after such a retry means
        the first try reached the node before the connection broke, so the block was taken."""
        retried = False
        try:
            verdict, retried = self._call_retried("submitblock", block_hex(solution))
        except RpcCallError as exc:
            verdict = f"error {exc.code}: {exc.message}"
        if verdict == "duplicate" and retried:
            verdict = None
        return Submitted(solution.job.height, verdict is None, "accepted" if verdict is None else str(verdict))
