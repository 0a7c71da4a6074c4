"""A node's getblocktemplate as a work source: jobs from its templates, blocks to its submitblock.

Built against Bitcoin Core's documented fields (BIP 22/23, BIP 141), so it mines Core (regtest,
signet, testnet) as well as `miner node`; each template becomes a job through
`miner.mining.template`.

A long poll runs in its own thread: the moment the node answers with a new template (a new tip,
new transactions) the coordinator gets the new job, so stale work stops within the long poll's
round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from miner.errors import MinerError
from miner.mining.rpc_client import RpcCallError, RpcClient
from miner.mining.sources.base import Submitted
from miner.mining.template import block_hex, job_from_template
from miner.mining.work import Job, Solution

log = logging.getLogger(__name__)

# Only what this client does: it builds its own coinbase (coinbasevalue) and long-polls.
TEMPLATE_REQUEST = {"rules": ["segwit"], "capabilities": ["coinbasevalue", "longpoll"]}
LONG_POLL_PROMPT = 0.5  # s: a long poll answered sooner with the same work did not wait
LONG_POLL_MAX_PAUSE = 2.0  # s: the longest pause between such answers


class TemplateSource:
    """getblocktemplate work from one node, with a long-poll thread announcing new templates."""

    def __init__(self, client: RpcClient, payout_script: bytes, message: bytes = b"pow-miner",
                 pow: str = "sha256d"):
        self.client = client
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
        result = self.client.call("getblocktemplate", request,
                                  timeout=None if longpollid is not None else -1)
        job = job_from_template(result, self.payout_script, self.message)
        return job if self.pow == "sha256d" else replace(job, pow=self.pow)

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
            except MinerError as exc:
                if self._stop.is_set():
                    return
                log.warning("long poll: %s; retrying", exc)
                self._stop.wait(1.0)
                continue
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
        reason string."""
        try:
            verdict = self.client.call("submitblock", block_hex(solution))
        except RpcCallError as exc:
            verdict = f"error {exc.code}: {exc.message}"
        return Submitted(solution.job.height, verdict is None, "accepted" if verdict is None else str(verdict))
