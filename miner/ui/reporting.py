"""How `miner mine` reports: a live rich view on a terminal, plain lines when piped, JSON for scripts.

Every reporter receives the same calls (start, job, block, coordinator events, finish), so the
mining loop does not care which one is in use. Coordinator events arrive on worker threads;
reporters that write them hold a lock so lines never interleave.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import IO, Any

from rich.console import Console
from rich.live import Live

from miner.backends.base import Backend
from miner.mining.coordinator import Coordinator, CoordinatorEvent
from miner.mining.loop import BlockFound
from miner.mining.work import Job
from miner.ui.live import MiningView
from miner.ui.units import format_rate

log = logging.getLogger(__name__)


def block_line(ev: BlockFound) -> str:
    return (f"block {ev.height:>6}  {ev.hash_hex}  nonce {ev.nonce:>10}  bits {ev.bits:08x}  "
            f"diff {ev.difficulty:12.6g}  {ev.seconds:7.2f} s  {format_rate(ev.rate)}  {ev.backend}"
            + (f"  node: {ev.verdict}" if ev.verdict else ""))


def summary_lines(summary: dict[str, Any]) -> list[str]:
    head = (f"{'interrupted: ' if summary['interrupted'] else ''}{summary['blocks']} block(s) in "
            f"{summary['seconds']:.1f} s, {summary['hashes']:,} hashes, {format_rate(summary['rate'])}")
    lines = [head]
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
        with self._lock:
            print(text, file=self.stream, flush=True)

    def start(self, chain_desc: dict[str, Any], backends: list[Backend], blocks: int,
              coordinator: Coordinator) -> None:
        pass

    def job(self, job: Job) -> None:
        pass

    def block(self, ev: BlockFound) -> None:
        pass

    def coordinator_event(self, ev: CoordinatorEvent) -> None:
        pass

    def stop(self) -> None:
        """Release the terminal (safe to call twice, and on any error path)."""

    def finish(self, summary: dict[str, Any]) -> None:
        for line in summary_lines(summary):
            self._write(line)


class PlainReporter(Reporter):
    """One line per block and per dropped stale hit: for logs and pipes."""

    def start(self, chain_desc, backends, blocks, coordinator) -> None:
        names = ", ".join(f"{b.name} ({b.device})" for b in backends)
        detail = chain_desc.get("detail") or (f"tip {chain_desc['height']}, {chain_desc['rule']} rule, "
                                              f"{chain_desc['spacing']} s spacing")
        self._write(f"mining {blocks} block(s) on {chain_desc['path']} ({detail}) with {names}")

    def block(self, ev: BlockFound) -> None:
        self._write(block_line(ev))

    def coordinator_event(self, ev: CoordinatorEvent) -> None:
        if ev.kind == "stale":
            self._write(f"stale: {ev.backend} found {len(ev.result.nonces)} hit(s) for a replaced job "
                        f"{ev.unit.job.job_id}; dropped")


class JsonReporter(Reporter):
    """One JSON object per line and per event: start, job, block, stale, summary."""

    def _emit(self, obj: dict[str, Any]) -> None:
        self._write(json.dumps(obj))

    def start(self, chain_desc, backends, blocks, coordinator) -> None:
        self._emit({"event": "start", "chain": chain_desc, "blocks": blocks,
                    "backends": [{"name": b.name, "kind": b.kind, "device": b.device}
                                 for b in backends]})

    def job(self, job: Job) -> None:
        # `prev` and `at` (wall clock) let a test measure how soon a new tip reached the miner.
        self._emit({"event": "job", "job_id": job.job_id, "height": job.height,
                    "bits": f"{job.bits:08x}", "time": job.time, "prev": job.prev_hash[::-1].hex(),
                    "at": time.time()})

    def block(self, ev: BlockFound) -> None:
        self._emit({"event": "block", **ev.__dict__, "rate": ev.rate})

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

    def start(self, chain_desc, backends, blocks, coordinator) -> None:
        names = ", ".join(f"{b.name} ({b.device})" for b in backends)
        detail = chain_desc.get("detail") or f"{chain_desc['rule']} rule, {chain_desc['spacing']} s spacing"
        self.console.print(f"mining {blocks} block(s) on [bold]{chain_desc['path']}[/] ({detail}) with {names}",
                           highlight=False)
        self.view = MiningView(coordinator, backends, blocks)
        self.live = Live(get_renderable=self.view, console=self.console, refresh_per_second=4,
                         transient=False, redirect_stdout=True, redirect_stderr=True)
        self.live.start()

    def job(self, job: Job) -> None:
        if self.view is not None:
            self.view.set_job(job)

    def block(self, ev: BlockFound) -> None:
        if self.view is not None:
            self.view.block_found()
        self.console.print(block_line(ev), highlight=False)

    def coordinator_event(self, ev: CoordinatorEvent) -> None:
        if ev.kind == "stale":
            log.info("stale: %s found %d hit(s) for a replaced job; dropped", ev.backend,
                     len(ev.result.nonces))

    def stop(self) -> None:
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
