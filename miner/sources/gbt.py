"""A node's getblocktemplate as a work source: jobs from its templates, blocks to its submitblock.

Built against Bitcoin Core's documented fields (BIP 22/23, BIP 141), so it mines Core (regtest,
signet, testnet) as well as `miner node`. The coinbase is built here: the BIP 34 height, an
extranonce the coordinator rolls, a short message, the payout, and the template's
`default_witness_commitment` output when there is one (then the coinbase carries the witness
reserved value as its witness when the block is submitted). The merkle branch over the template's
transactions is computed once per template, so rolling the extranonce costs two hashes a level.

A long poll runs in its own thread: the moment the node answers with a new template (a new tip,
new transactions) the coordinator gets the new job, so stale work stops within the long poll's
round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..errors import MinerError, UsageError
from ..header import bits_to_target, parse_display_hex
from ..rpc_client import RpcCallError, RpcClient
from ..tx import coinbase_template, merkle_branch
from ..wire import DecodeError, Transaction, add_coinbase_witness, serialize_block
from ..work import Job, Solution

log = logging.getLogger(__name__)

# Only what this client does: it builds its own coinbase (coinbasevalue) and long-polls.
TEMPLATE_REQUEST = {"rules": ["segwit"], "capabilities": ["coinbasevalue", "longpoll"]}


class TemplateError(MinerError):
    """A template this miner cannot build a block from: named field and why."""


def _field(template: dict, name: str, kind: type | tuple) -> Any:
    value = template.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TemplateError(f"getblocktemplate: field {name!r} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def job_from_template(template: dict, payout_script: bytes, message: bytes = b"pow-miner",
                      extranonce_size: int = 8) -> Job:
    """A Job for a getblocktemplate result; raises TemplateError naming a bad field."""
    if not isinstance(template, dict):
        raise TemplateError("getblocktemplate did not return an object")
    height = _field(template, "height", int)
    version = _field(template, "version", int)
    prev = parse_display_hex(_field(template, "previousblockhash", str), "previousblockhash")
    value = _field(template, "coinbasevalue", int)
    curtime = _field(template, "curtime", int)
    try:
        bits = int(_field(template, "bits", str), 16)
        target = bits_to_target(bits)
    except (ValueError, UsageError) as exc:
        raise TemplateError(f"getblocktemplate: bad bits: {exc}") from None
    if "target" in template:
        try:
            stated = int(template["target"], 16)
        except (TypeError, ValueError):
            raise TemplateError("getblocktemplate: field 'target' is not hex") from None
        target = min(target, stated)  # never submit a block the node's own target refuses
    raw_txs = []
    ids = []
    for i, entry in enumerate(_field(template, "transactions", list)):
        try:
            raw = bytes.fromhex(entry["data"])
            tx = Transaction.parse(raw)
        except (TypeError, KeyError, ValueError, DecodeError) as exc:
            raise TemplateError(f"getblocktemplate: transaction {i} does not parse ({exc})") from None
        if "txid" in entry and entry["txid"] != tx.txid[::-1].hex():
            raise TemplateError(f"getblocktemplate: transaction {i}'s txid does not match its data")
        raw_txs.append(raw)
        ids.append(tx.txid)
    extra_outputs = []
    commitment = template.get("default_witness_commitment")
    if commitment:
        try:
            extra_outputs.append((0, bytes.fromhex(commitment)))
        except (TypeError, ValueError):
            raise TemplateError("getblocktemplate: default_witness_commitment is not hex") from None
    try:
        coinbase = coinbase_template(height, message, value, extranonce_size, payout_script, extra_outputs)
    except ValueError as exc:
        raise TemplateError(f"cannot build the coinbase: {exc}") from None
    branch = tuple(merkle_branch([bytes(32)] + ids))
    longpollid = template.get("longpollid") if isinstance(template.get("longpollid"), str) else None
    return Job(job_id=f"{height}-{prev[::-1].hex()[:16]}-{int(time.time() * 1000) % 10**6}",
               height=height, version=version, prev_hash=prev, coinbase=coinbase, branch=branch,
               time=curtime, bits=bits, target=target, extra_txs=tuple(raw_txs),
               source_data={"longpollid": longpollid, "witness": bool(commitment)})


def block_hex(solution: Solution) -> str:
    """The solved block as submitblock takes it."""
    job = solution.job
    coinbase = job.coinbase_tx(solution.extranonce)
    if job.source_data.get("witness"):
        coinbase = add_coinbase_witness(coinbase)
    return serialize_block(solution.header, [coinbase, *job.extra_txs]).hex()


class TemplateSource:
    """getblocktemplate work from one node, with a long-poll thread announcing new templates."""

    def __init__(self, client: RpcClient, payout_script: bytes, message: bytes = b"pow-miner"):
        self.client = client
        self.payout_script = payout_script
        self.message = message
        self._lock = threading.Lock()
        self.current: Job | None = None
        self._stop = threading.Event()

    def fetch(self, longpollid: str | None = None) -> Job:
        request = dict(TEMPLATE_REQUEST)
        if longpollid is not None:
            request["longpollid"] = longpollid
        result = self.client.call("getblocktemplate", request,
                                  timeout=None if longpollid is not None else -1)
        return job_from_template(result, self.payout_script, self.message)

    @staticmethod
    def same_work(a: Job | None, b: Job) -> bool:
        return (a is not None and a.prev_hash == b.prev_hash
                and a.source_data.get("longpollid") == b.source_data.get("longpollid")
                and a.extra_txs == b.extra_txs)

    def offer(self, job: Job, on_new: Callable[[Job], None], solved: Job | None = None) -> bool:
        """Make `job` current unless it is the same work as the current job; True if it replaced
        it. `solved`: that job was just solved, so if it is still current even the same template
        needs a fresh start (the long poll may already have replaced it: then nothing to do)."""
        with self._lock:
            restart = solved is not None and self.current is solved
            if not restart and self.same_work(self.current, job):
                return False
            self.current = job
            on_new(job)
            return True

    def start_long_poll(self, on_new: Callable[[Job], None]) -> None:
        def run() -> None:
            while not self._stop.is_set():
                current = self.current
                lpid = current.source_data.get("longpollid") if current else None
                try:
                    job = self.fetch(lpid) if lpid else self.fetch()
                except MinerError as exc:
                    if self._stop.is_set():
                        return
                    log.warning("long poll: %s; retrying", exc)
                    self._stop.wait(1.0)
                    continue
                if not self._stop.is_set():
                    self.offer(job, on_new)
                if not lpid:
                    self._stop.wait(1.0)  # a node without long polling: poll once a second
        threading.Thread(target=run, name="longpoll", daemon=True).start()

    def stop(self) -> None:
        # The thread may sit in a long poll that only a new template ends; it is a daemon.
        self._stop.set()

    def submit(self, solution: Solution) -> str | None:
        """submitblock's verdict: None when accepted, else Core's BIP 22 reason string."""
        try:
            return self.client.call("submitblock", block_hex(solution))
        except RpcCallError as exc:
            return f"error {exc.code}: {exc.message}"
