"""How `miner mine` reports: a live rich view on a terminal, plain lines when piped, JSON for scripts.

Every reporter receives the same calls (start, job, block, coordinator events, finish), so the
mining loop does not care which one is in use. Coordinator events arrive on worker threads;
reporters that write them hold a lock so lines never interleave.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
import threading
import time
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from miner.backends.base import Backend
from miner.mining.coordinator import Coordinator, CoordinatorEvent
from miner.mining.loop import BlockFound, ShareFound
from miner.mining.work import Job
from miner.stopping import whole_line
from miner.ui.live import MiningView
from miner.ui.units import format_rate

log = logging.getLogger(__name__)


def short_hash(hash_hex: str) -> str:
    """A block hash as a person compares it: its head and tail (the whole is in --json and in
    `miner chain show`)."""
    return f"{hash_hex[:12]}…{hash_hex[-6:]}"


LINE_WIDTH = 100  # block lines fit this, so a log viewer or a terminal never wraps one mid-number


def block_line(ev: BlockFound) -> str:
    """One block in at most LINE_WIDTH columns: height, the hash's head and tail, difficulty,
    seconds, the rate of the backend that found it (its own, not the block's mean: `--json` has both)
    and that backend, and a node's or pool's verdict. The nonce is left to
    --json and `miner chain show` (the hash already names the block), so the widest realistic line
    (a 7-digit height, a 5-digit number of seconds, GH/s, cuda:10, accepted) still fits. A
    refusal whose reason does not fit ends the line with "refused:" and gives the whole reason on
    the lines below, indented and wrapped at word boundaries: nothing is cut, and a person or a
    script looking for "refused" on the block's line still finds it."""
    line = (f"block {ev.height:>6}  {short_hash(ev.hash_hex)}  diff {ev.difficulty:<9.4g}  "
            f"{ev.seconds:7.2f} s  {format_rate(ev.backend_rate):>11}  {ev.backend}")
    if not ev.verdict:
        return line
    whole = f"{line}  {_verdict(ev.verdict)}"
    if len(whole) <= LINE_WIDTH or ev.verdict == "accepted":
        return whole
    reason = textwrap.wrap(ev.verdict, LINE_WIDTH - 4, break_on_hyphens=False)
    return "\n".join([f"{line}  refused:", *(f"    {part}" for part in reason)])


def _verdict(verdict: str) -> str:
    return verdict if verdict == "accepted" else f"refused: {verdict}"


def share_line(ev: ShareFound) -> str:
    return (f"share {short_hash(ev.hash_hex)}  diff {ev.difficulty:<9.4g} (asked {ev.target_difficulty:.4g})  "
            f"job {ev.job_id}  {ev.backend}  {_verdict(ev.verdict)}")


def goal_words(blocks: int, shares: int = 0) -> str:
    """What ends the run, as the start line says it."""
    goals = [f"{shares} accepted share(s)"] if shares else []
    goals += [f"{blocks} block(s)"] if blocks else []
    return " or ".join(goals) if goals else "until stopped"


def pool_line(event: dict[str, Any]) -> str:
    """One line for what the pool or node connection did (connected, lost, retrying, a new
    difficulty...)."""
    status = event.get("status")
    where = f"{'node' if event.get('event') == 'node' else 'pool'} {event.get('url')}"
    if status == "retrying":
        return f"{where}: {event['reason']}; retrying in {event['wait']:.1f} s"
    if status == "reconnected":
        return f"{where}: answering again"
    if status == "connected":
        return (f"pool {event['url']}: connected, extranonce1 {event['extranonce1']}, extranonce2 "
                f"{event['extranonce2_size']} bytes, version mask {event['version_mask']}")
    if status == "disconnected":
        return f"pool {event['url']}: {event['reason']}"
    if status == "difficulty":
        return f"pool {event['url']}: difficulty {event['difficulty']:.6g}"
    if status == "extranonce":
        return f"pool {event['url']}: extranonce1 {event['extranonce1']} from the next job"
    return f"pool {event.get('url')}: {event.get('message', status)}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    head = (f"{'interrupted: ' if summary['interrupted'] else ''}{summary['blocks']} block(s) in "
            f"{summary['seconds']:.1f} s, {summary['hashes']:,} hashes, {format_rate(summary['rate'])}")
    lines = [head]
    if "shares" in summary:
        s = summary["shares"]
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(s["reasons"].items(), key=lambda kv: -kv[1]))
        lines.append(f"  shares: {s['accepted']} accepted, {s['rejected']} rejected"
                     + (f" ({reasons})" if reasons else ""))
    for b in summary["backends"]:
        lines.append(f"  {b['name']:<7} {format_rate(b['rate']):>11} {b['hashes']:>15,} hashes "
                     f"{b['share'] * 100:5.1f}%  hits {b['hits']}  stale {b['stale']}"
                     + (f"  REJECTED {b['rejected']}" if b["rejected"] else ""))
    return lines


class Reporter:
    """Says nothing: the base for the others, and `--quiet` until the summary."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        """One line, newline included, never cut short by a stop signal (`stopping`): a Ctrl-C
        or SIGTERM handled inside a write cut a line short, and a script read the event and the
        summary on one line. The stop now ends the run as soon as the line is out."""
        with whole_line(), self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def start(self, chain_desc: dict[str, Any], backends: list[Backend], blocks: int, shares: int,
              coordinator: Coordinator) -> None:
        pass

    def job(self, job: Job) -> None:
        pass

    def block(self, ev: BlockFound) -> None:
        pass

    def share(self, ev: ShareFound, tally: Any) -> None:
        """A pool's verdict on a share; `tally` has the counts so far (accepted, rejected)."""

    def pool(self, event: dict[str, Any]) -> None:
        """The pool connection changed (connected, lost, new difficulty, new extranonce)."""

    def backend_event(self, event: dict[str, Any]) -> None:
        """A backend is compiling, joined the run, retired (a stand-in) or failed to start."""

    def coordinator_event(self, ev: CoordinatorEvent) -> None:
        pass

    def stop(self) -> None:
        """Release the terminal (safe to call twice, and on any error path)."""

    def finish(self, summary: dict[str, Any]) -> None:
        for line in summary_lines(summary):
            self._write(line)


class PlainReporter(Reporter):
    """One line per block and per dropped stale hit: for logs and pipes."""

    def start(self, chain_desc, backends, blocks, shares, coordinator) -> None:
        names = ", ".join(f"{b.name} ({b.device})" for b in backends)
        detail = chain_desc.get("detail") or (f"tip {chain_desc['height']}, {chain_desc['rule']} rule, "
                                              f"{chain_desc['spacing']} s spacing")
        if chain_desc.get("metrics"):
            detail += f"; metrics at {chain_desc['metrics']}"
        what = goal_words(blocks, shares)
        self._write(f"mining {what} on {chain_desc['path']} ({detail}) with {names}")

    def block(self, ev: BlockFound) -> None:
        self._write(block_line(ev))

    def share(self, ev: ShareFound, tally: Any) -> None:
        self._write(share_line(ev))

    def pool(self, event: dict[str, Any]) -> None:
        self._write(pool_line(event))

    def backend_event(self, event: dict[str, Any]) -> None:
        self._write(event["message"])

    def coordinator_event(self, ev: CoordinatorEvent) -> None:
        if ev.kind == "stale":
            self._write(f"stale: {ev.backend} found {len(ev.result.nonces)} hit(s) for a replaced job "
                        f"{ev.unit.job.job_id}; dropped")


class JsonReporter(Reporter):
    """One JSON object per line and per event: start, job, block, stale, summary."""

    def _emit(self, obj: dict[str, Any]) -> None:
        self._write(json.dumps(obj))

    def start(self, chain_desc, backends, blocks, shares, coordinator) -> None:
        self._emit({"event": "start", "chain": chain_desc, "blocks": blocks, "shares": shares,
                    "backends": [{"name": b.name, "kind": b.kind, "device": b.device}
                                 for b in backends]})

    def job(self, job: Job) -> None:
        # `prev` and `at` (wall clock) let a test measure how soon a new tip reached the miner.
        self._emit({"event": "job", "job_id": job.job_id, "height": job.height,
                    "bits": f"{job.bits:08x}", "time": job.time, "prev": job.prev_hash[::-1].hex(),
                    "at": time.time()})

    def block(self, ev: BlockFound) -> None:
        # bits as hex, as in the job event and as Core writes them
        self._emit({"event": "block", **ev.__dict__, "bits": f"{ev.bits:08x}", "rate": ev.rate})

    def share(self, ev: ShareFound, tally: Any) -> None:
        self._emit({"event": "share", **ev.__dict__, "at": time.time()})

    def pool(self, event: dict[str, Any]) -> None:
        self._emit({**event, "at": time.time()})

    def backend_event(self, event: dict[str, Any]) -> None:
        self._emit({**event, "at": time.time()})

    def coordinator_event(self, ev: CoordinatorEvent) -> None:
        if ev.kind == "stale":
            self._emit({"event": "stale", "backend": ev.backend, "job_id": ev.unit.job.job_id,
                        "nonces": ev.result.nonces})

    def finish(self, summary: dict[str, Any]) -> None:
        self._emit(summary)


class LiveReporter(Reporter):
    """A rich live panel (per-backend rate, hits and share; tip, difficulty, expected time to the
    next block), with each found block printed above it as a permanent line."""

    def __init__(self, console: Console):
        super().__init__(console.file)
        self.console = console
        self.view: MiningView | None = None
        self.live: Live | None = None
        self._pool_where = self._pool_difficulty = self._pool_shares = ""

    def start(self, chain_desc, backends, blocks, shares, coordinator) -> None:
        # Lines that fit 80 columns, not one line the terminal wraps: where and what, then each
        # backend with its device, then the metrics address.
        detail = chain_desc.get("detail") or f"{chain_desc['rule']} rule, {chain_desc['spacing']} s spacing"
        what = goal_words(blocks, shares)
        self.console.print(f"mining {what} on [bold]{escape(str(chain_desc['path']))}[/] ({detail}) with:",
                           highlight=False)
        for b in backends:
            self.console.print(Text.assemble(f"  {b.name:<7} ", (b.device, ""), no_wrap=True, overflow="ellipsis"),
                               highlight=False)
        if chain_desc.get("metrics"):
            self.console.print(f"metrics at {chain_desc['metrics']}", highlight=False)
        self.view = MiningView(coordinator, backends, blocks)
        self._show_pool()
        self.live = Live(get_renderable=self.view, console=self.console, refresh_per_second=4,
                         transient=False, redirect_stdout=True, redirect_stderr=True)
        self.live.start()

    def job(self, job: Job) -> None:
        if self.view is not None:
            self.view.set_job(job)

    def block(self, ev: BlockFound) -> None:
        if self.view is not None:
            self.view.block_found(ev.height, taken=ev.verdict in ("", "accepted"))
        self.console.print(block_line(ev), highlight=False)

    def share(self, ev: ShareFound, tally: Any) -> None:
        self._pool_shares = (f"shares {tally.accepted} accepted, {tally.rejected} rejected"
                             + ("" if ev.accepted else f" (last: {ev.verdict})"))
        self._show_pool()

    def pool(self, event: dict[str, Any]) -> None:
        status = event.get("status")
        if status == "connected":
            self._pool_where = f"pool {event['url']}"
        elif status == "disconnected":
            self._pool_where = f"pool {event['url']}: {event['reason']}; looking for a pool"
        elif status == "difficulty":
            self._pool_difficulty = f"difficulty {event['difficulty']:.6g}"
        if status in ("connected", "disconnected", "message", "retrying", "reconnected"):
            self.console.print(pool_line(event), highlight=False)
        self._show_pool()

    def backend_event(self, event: dict[str, Any]) -> None:
        self.console.print(event["message"], highlight=False)

    def _show_pool(self) -> None:
        if self.view is not None:
            self.view.pool = "  ".join(part for part in (self._pool_where, self._pool_difficulty,
                                                         self._pool_shares) if part)

    def coordinator_event(self, ev: CoordinatorEvent) -> None:
        if ev.kind == "stale":
            log.info("stale: %s found %d hit(s) for a replaced job; dropped", ev.backend,
                     len(ev.result.nonces))

    def stop(self) -> None:
        if self.view is not None:
            self.view.stop()  # the last frame is the state when the run ended
        if self.live is not None:
            self.live.stop()  # the last frame stays on screen: the per-backend totals
            self.live = None

    def finish(self, summary: dict[str, Any]) -> None:
        self.stop()
        for line in summary_lines(summary):
            self.console.print(line, highlight=False)


def make_reporter(json_mode: bool, quiet: bool, console: Console | None = None) -> Reporter:
    """JSON, quiet, a live view on a terminal, or plain lines when stdout is not one."""
    if json_mode:
        return JsonReporter()
    if quiet:
        return Reporter()
    console = console or Console()
    return LiveReporter(console) if console.is_terminal else PlainReporter()
