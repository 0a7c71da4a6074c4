"""One connection to a Stratum v1 pool: the socket, the lines, the requests awaiting replies, and
the pool's notifications turned into jobs.

The handshake is sent at once, the way cgminer and cpuminer-opt do it, and its replies are
handled on the reading thread in the order they come: `mining.configure` (BIP 310 version
rolling, which a pool may refuse or not know), `mining.subscribe` (extranonce1 and the size of
extranonce2), `mining.suggest_difficulty` when the user gave one (cgminer's --suggest-diff,
ESP-Miner's suggested difficulty), `mining.authorize`, then `mining.extranonce.subscribe` so the
pool may change the extranonce later. Handling each reply where it is read matters: pools send `set_difficulty` and
`notify` right behind the subscribe reply, before anything else could look at it.

Conventions (the ones `miner.primitives.stratum` names): previous hash in Stratum's word order,
version/nbits/ntime/nonce as 8 hex digits of the number, extranonce2 as its bytes, and a
version-rolling share's sixth parameter the rolled bits within the mask (BIP 310).
"""

from __future__ import annotations

import itertools
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from miner.errors import MinerError
from miner.mining.sources.pool_url import PoolUrl
from miner.mining.sources.pool_wire import LOST, Reply, coinbase_height, unswap_prevhash
from miner.mining.work import Job
from miner.primitives.coinbase import CoinbaseTemplate
from miner.primitives.compact import bits_to_target
from miner.primitives.stratum import (
    VERSION_MASK,
    difficulty_to_target,
    encode,
    positive_number,
)

MAX_LINE = 1 << 20  # bytes: a pool line longer than this is not Stratum
CONNECT_TIMEOUT = 5.0  # s
READ_TICK = 0.25  # s: how often the reading thread looks up from the socket
LIVE_JOBS_KEPT = 32  # jobs since the last clean_jobs whose shares are still sent (pools keep about 16)


class PoolLink:
    """A live connection: `run` reads until the pool hangs up, `stop` is set or `should_end()`
    says so; everything the pool says is handled on that thread."""

    def __init__(self, url: PoolUrl, serial: int, agent: str, on_job: Callable[[Job], None],
                 on_event: Callable[[dict], None], roll_version: bool = True, pow: str = "sha256d",
                 suggest_difficulty: float | None = None):
        self.url = url
        self.serial = serial  # in every job id, so a share is never sent over another connection
        self.agent = agent
        self.on_job = on_job
        self.on_event = on_event
        self.roll_version = roll_version
        self.suggest_difficulty = suggest_difficulty  # asked of the pool before authorizing, if given
        self.pow = pow  # the pool's proof of work: its jobs' hash and how it counts share difficulty
        self.sock = socket.create_connection((url.host, url.port), timeout=CONNECT_TIMEOUT)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.sock.settimeout(READ_TICK)
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[Reply, Callable[[Reply], None] | None]] = {}
        self._pending_lock = threading.Lock()
        self.extranonce1: bytes | None = None
        self.extranonce2_size = 0
        self.next_extranonce: tuple[bytes, int] | None = None  # from set_extranonce, for the next job
        self.difficulty = 1.0
        self.version_mask = 0
        self.authorized = threading.Event()
        self.failure: str | None = None  # why the pool ended the session, if it did
        self.reconnect_to: tuple[int, float] | None = None  # (port, wait) from client.reconnect
        self.current: Job | None = None
        self._job_lock = threading.Lock()  # `current` is replaced by this thread and the submitting one
        # Whether the pool takes a hash that meets the block target but not the share target
        # (only where the block target is the easier one: regtest, testnet's minimum-difficulty
        # blocks, a pool whose share difficulty is above the network's). True: it judges blocks
        # first, as this project's node does; False: it refused one (ckpool and others judge the
        # share first, and such a hit is then worth nothing there); None: not known yet. One such
        # hit at most is sent per tip, so a pool is never flooded with them.
        self.blocks_first: bool | None = None
        self._block_only_tip: bytes | None = None
        # The jobs the pool still takes shares for: since its last notify with clean_jobs=true,
        # which tells miners that every earlier job is void. Replaced whole, never emptied in
        # place: the submitting thread reads it while this one writes.
        self.live_jobs: dict[str, None] = {}
        self.closed = threading.Event()
        self.last_progress = time.monotonic()  # a new job or an accepted share: what the watchdog wants

    # ------------------------------------------------------------------ writing

    def send(self, method: str, params: list, on_reply: Callable[[Reply], None] | None = None) -> Reply:
        """Send a request; its Reply is filled in (and `done` set) when the answer is read."""
        rid = next(self._ids)
        reply = Reply(done=threading.Event())
        with self._pending_lock:
            if self.closed.is_set():
                reply.error = LOST
                reply.done.set()
                return reply
            self._pending[rid] = (reply, on_reply)
        self._write(encode({"id": rid, "method": method, "params": params}))
        return reply

    def _write(self, data: bytes) -> None:
        try:
            with self._write_lock:
                self.sock.sendall(data)
        except OSError:
            self.close()

    def handshake(self) -> None:
        if self.roll_version:
            self.send("mining.configure", [["version-rolling"], {
                "version-rolling.mask": f"{VERSION_MASK:08x}", "version-rolling.min-bit-count": 2}],
                self._configured)
        self.send("mining.subscribe", [self.agent], self._subscribed)
        if self.suggest_difficulty is not None:
            # Before authorizing: public-pool, for one, sends its own default (16,384 to any miner
            # it does not know) at authorization unless a suggestion came first. A pool that does
            # not know the method answers an error, which changes nothing.
            self.send("mining.suggest_difficulty", [self.suggest_difficulty])
        self.send("mining.authorize", [self.url.user, self.url.password], self._authorized)

    def close(self) -> None:
        with self._pending_lock:
            if self.closed.is_set():
                return
            self.closed.set()
            pending, self._pending = self._pending, {}
        for reply, _ in pending.values():
            reply.error = LOST
            reply.done.set()
        try:
            self.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ reading

    def run(self, stop: threading.Event, should_end: Callable[[], str | None]) -> str:
        """Read and handle lines until the session ends; returns why it ended."""
        buffer = b""
        try:
            while not stop.is_set():
                reason = should_end()
                if reason:
                    return reason
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError as exc:
                    return f"connection lost ({exc.strerror or exc})"
                if not chunk:
                    return "the pool closed the connection"
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        self._handle(line)
                    if self.failure:
                        return self.failure
                if len(buffer) > MAX_LINE:
                    return f"the pool sent a line longer than {MAX_LINE} bytes"
            return "stopped"
        finally:
            self.close()

    def _handle(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            self.failure = "the pool sent a line that is not JSON"
            return
        if not isinstance(message, dict):
            self.failure = "the pool sent JSON that is not a message"
            return
        method = message.get("method")
        if isinstance(method, str):
            params = message.get("params")
            self._notification(message.get("id"), method, params if isinstance(params, list) else [])
            return
        rid = message.get("id")
        with self._pending_lock:
            waiting = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if waiting is None:
            return  # a reply to nothing we asked: ignored, as cgminer does
        reply, on_reply = waiting
        reply.result, reply.error = message.get("result"), message.get("error")
        reply.reject_reason = message.get("reject-reason")
        if on_reply is not None:
            try:
                on_reply(reply)
            except (TypeError, ValueError, IndexError, KeyError) as exc:
                self.failure = f"the pool's reply does not parse ({type(exc).__name__}: {exc})"
        reply.done.set()

    def _notification(self, rid: Any, method: str, params: list) -> None:
        try:
            if method == "mining.notify":
                self._notify(params)
            elif method == "mining.set_difficulty":
                self._set_difficulty(params)
            elif method == "mining.set_extranonce":
                self.next_extranonce = (bytes.fromhex(params[0]), int(params[1]))
                self.on_event({"event": "pool", "status": "extranonce", "url": self.url.display,
                               "extranonce1": params[0], "extranonce2_size": int(params[1])})
            elif method == "mining.set_version_mask":
                self.version_mask = int(params[0], 16) & VERSION_MASK
            elif method == "client.reconnect":
                self._reconnect(params)
            elif method == "client.get_version":
                self._write(encode({"id": rid, "result": self.agent, "error": None}))
            elif method == "client.show_message":
                self.on_event({"event": "pool", "status": "message", "url": self.url.display,
                               "message": str(params[0])[:200] if params else ""})
            elif rid is not None:
                self._write(encode({"id": rid, "result": None, "error": [20, f"unknown method {method[:40]}", None]}))
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            self.failure = f"the pool's {method[:40]} does not parse ({type(exc).__name__}: {exc})"

    # ------------------------------------------------------------------ the handshake's replies

    def _configured(self, reply: Reply) -> None:
        if isinstance(reply.result, dict) and reply.result.get("version-rolling") is True:
            self.version_mask = int(reply.result.get("version-rolling.mask", "0"), 16) & VERSION_MASK

    def _subscribed(self, reply: Reply) -> None:
        if reply.error or not isinstance(reply.result, list) or len(reply.result) < 3:
            self.failure = f"mining.subscribe refused: {reply.refused or 'not a subscription'}"
            return
        self.extranonce1 = bytes.fromhex(reply.result[1])
        self.extranonce2_size = int(reply.result[2])
        if not 1 <= self.extranonce2_size <= 16:
            self.failure = f"the pool's extranonce2 size {self.extranonce2_size} is not 1..16"

    def _authorized(self, reply: Reply) -> None:
        if reply.refused:
            self.failure = f"mining.authorize refused: {reply.refused}"
            return
        self.last_progress = time.monotonic()
        self.authorized.set()
        self.on_event({"event": "pool", "status": "connected", "url": self.url.display,
                       "extranonce1": (self.extranonce1 or b"").hex(), "extranonce2_size": self.extranonce2_size,
                       "version_mask": f"{self.version_mask:08x}"})
        self.send("mining.extranonce.subscribe", [])  # a pool that does not know it says so; fine

    # ------------------------------------------------------------------ notifications

    def _set_difficulty(self, params: list) -> None:
        difficulty = positive_number(params[0] if params else None)
        if difficulty is None:
            raise ValueError("difficulty is not a positive number")
        self.difficulty = difficulty
        self.on_event({"event": "pool", "status": "difficulty", "url": self.url.display,
                       "difficulty": difficulty})
        self._retarget_current()  # at once, on the job at work: the search goes on from where it is

    def share_target(self) -> int:
        return difficulty_to_target(self.difficulty, self.pow)

    def _target(self, bits: int, prev_hash: bytes) -> int:
        """The kernels' target: the share target, which is what the pool counts. Where the block
        target is easier, it instead while the pool may judge blocks first and no block-only hit
        was sent for this tip yet (a block the pool would take is never passed over)."""
        share = self.share_target()
        try:
            block = bits_to_target(bits)
        except (MinerError, ValueError):
            return share
        if block > share and self.blocks_first is not False and self._block_only_tip != prev_hash:
            return block
        return share

    def _retarget_current(self) -> None:
        """The job at work with its target as it should be now (`_target`: per tip, so a job of
        another tip than the one a block-only hit was sent for keeps its own)."""
        with self._job_lock:
            current = self.current
            if current is None:
                return
            target = self._target(current.bits, current.prev_hash)
            if target != current.target:
                self.current = replace(current, target=target)
                self.on_job(self.current)

    def take_block_only(self, job: Job) -> bool:
        """Whether a hit of `job` that meets the block target but not the share target may be
        sent: once per tip, and never to a pool known to refuse them. Sending one sets the job
        at work back to the share target if it is of that tip, whichever of its jobs the hit was
        found on (a unit still in flight holds the job before a notify that did not void it)."""
        with self._job_lock:
            if self.blocks_first is False or self._block_only_tip == job.prev_hash:
                return False
            self._block_only_tip = job.prev_hash
        self._retarget_current()
        return True

    def share_accepted(self) -> None:
        """The pool took one of our shares: it is working for us (the watchdog's other sign)."""
        self.last_progress = time.monotonic()

    def block_only_judged(self, accepted: bool) -> None:
        """The pool's answer to a block-only hit: whether it judges blocks first."""
        self.blocks_first = accepted

    def _notify(self, params: list) -> None:
        if self.extranonce1 is None:
            raise ValueError("mining.notify before the subscription")
        if self.next_extranonce is not None:
            self.extranonce1, self.extranonce2_size = self.next_extranonce
            self.next_extranonce = None
        job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, clean = params[:9]
        coinb1_bytes = bytes.fromhex(coinb1)
        base_version = int(version, 16)
        rolled = base_version
        if self.version_mask:  # a random draw within the mask: this miner's own slice of the space
            rolled = (base_version & ~self.version_mask) | (secrets.randbits(32) & self.version_mask)
        bits = int(nbits, 16)
        job = Job(job_id=f"{self.serial}:{job_id}", height=coinbase_height(coinb1_bytes),
                  version=rolled, prev_hash=unswap_prevhash(prevhash),
                  coinbase=CoinbaseTemplate(coinb1_bytes, bytes.fromhex(coinb2), self.extranonce2_size,
                                            self.extranonce1),
                  branch=tuple(bytes.fromhex(b) for b in branch), time=int(ntime, 16), bits=bits,
                  target=self._target(bits, unswap_prevhash(prevhash)), clean=bool(clean), shares=True,
                  pow=self.pow)
        if len(job.prev_hash) != 32 or any(len(b) != 32 for b in job.branch):
            raise ValueError("a merkle branch entry is not 32 bytes")
        if job.clean:
            self.live_jobs = {job.job_id: None}
        else:
            live = {**self.live_jobs, job.job_id: None}
            self.live_jobs = dict(list(live.items())[-LIVE_JOBS_KEPT:])
        self.last_progress = time.monotonic()
        with self._job_lock:
            self.current = job
            self.on_job(job)

    def is_live(self, job: Job) -> bool:
        """Whether a share of `job` may still be sent: no clean_jobs notify has voided it."""
        return job.job_id in self.live_jobs

    def _reconnect(self, params: list) -> None:
        """client.reconnect: the same host only (a pool may not send its miners elsewhere), at
        the port it names, after the wait it names (at most a minute)."""
        port = int(params[1]) if len(params) > 1 and params[1] not in (None, "") else self.url.port
        wait = float(params[2]) if len(params) > 2 and params[2] not in (None, "") else 0.0
        self.reconnect_to = (port, min(max(wait, 0.0), 60.0))
        self.failure = "the pool asked to reconnect"

    # ------------------------------------------------------------------ shares

    def submit_params(self, job: Job, extranonce: int, nonce: int) -> list:
        _, _, stratum_id = job.job_id.partition(":")
        params = [self.url.user, stratum_id,
                  extranonce.to_bytes(job.coinbase.extranonce_size, "little").hex(),
                  f"{job.time & 0xFFFFFFFF:08x}", f"{nonce & 0xFFFFFFFF:08x}"]
        if self.version_mask:
            params.append(f"{job.version & self.version_mask:08x}")
        return params
