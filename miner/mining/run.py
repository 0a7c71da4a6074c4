"""One `miner mine` run, whatever the work comes from: the backends started in stages
(`startup`), a coordinator over them, the mining loop over one work source, an optional metrics
endpoint, and the summary, always.

The CLI only configures a run (which source, which backends, how many blocks or shares, what
to release at the end) and calls `run()`. Ctrl-C (exit 130) and a MinerError (a block that
cannot be stored, a node gone) end the run with the summary printed first; a second stop signal
while shutting down is ignored, so the summary is not lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from miner.backends.base import Backend
from miner.errors import MinerError
from miner.mining.coordinator import Coordinator, CoordinatorEvent
from miner.mining.loop import BlockFound, ShareFound, ShareTally, mine
from miner.mining.sources.base import WorkSource
from miner.mining.startup import StagedStart
from miner.mining.work import Job
from miner.primitives.compact import DIFF1_TARGET
from miner.stopping import ignore_stop_signals, restore_handlers


class RunReporter(Protocol):
    """What a run tells its user (`miner.ui.reporting` has the kinds: JSON, plain, live)."""

    def start(self, chain_desc: dict[str, Any], backends: list[Backend], blocks: int, shares: int,
              coordinator: Coordinator) -> None: ...
    def job(self, job: Job) -> None: ...
    def block(self, ev: BlockFound) -> None: ...
    def share(self, ev: ShareFound, tally: Any) -> None: ...
    def backend_event(self, event: dict[str, Any]) -> None: ...
    def coordinator_event(self, ev: CoordinatorEvent) -> None: ...
    def stop(self) -> None: ...
    def finish(self, summary: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class RunOptions:
    blocks: int = 0  # our blocks the source accepts before the run ends (0: no limit)
    shares: int = 0  # a pool's: our shares it accepts before the run ends (0: no limit)
    unit_seconds: float = 1.0  # how long a backend's unit of work lasts
    wait_for_kernels: bool = False  # every kernel compiled or loaded before the first hash
    metrics: tuple[str, int] | None = None  # where /metrics is served, if anywhere


class MiningRun:
    """`source`'s work on `backends` until the options' limit, an interrupt or a failure.
    `describe`: what is mined, for the reporter's first lines; `release`: called once at the
    end whatever happened (a chain file and its lock, a pool connection); `pool`: the pool
    connection's status, when mining at a pool (shares are counted, and served as metrics)."""

    def __init__(self, source: WorkSource, backends: Sequence[Backend], reporter: RunReporter,
                 describe: dict[str, Any], options: RunOptions, release: Callable[[], None] | None = None,
                 pool: Any = None):
        self.source, self.backends, self.reporter = source, list(backends), reporter
        self.describe, self.options, self.release, self.pool = dict(describe), options, release, pool
        self.found: list[BlockFound] = []
        self.shares = ShareTally() if pool is not None else None
        self.coordinator: Coordinator | None = None

    def total_rate(self) -> float:
        """Hashes a second across the backends now (0 before the run starts): a pool source's
        stall watchdog reads it."""
        return self.coordinator.total_rate() if self.coordinator is not None else 0.0

    def run(self) -> int:
        """Mine, then print the summary; the exit status (130 when interrupted), or the run's
        MinerError raised after the summary."""
        options, reporter = self.options, self.reporter
        if options.wait_for_kernels:
            self._warm_up_all()
        staged = StagedStart(self.backends, reporter.backend_event)  # hashing at once, compiled kernels join
        self.coordinator = coordinator = Coordinator(staged.ready, unit_seconds=options.unit_seconds,
                                                     on_event=reporter.coordinator_event)
        metrics_server = self._serve_metrics(coordinator)
        interrupted = False
        failure: MinerError | None = None
        t0 = time.perf_counter()
        previous: dict = {}
        try:
            reporter.start(self.describe, staged.all, options.blocks, options.shares, coordinator)
            coordinator.start()
            staged.start(coordinator)
            if self.shares is not None:
                mine(coordinator, self.source, options.blocks, self._on_block, on_job=reporter.job,
                     shares=options.shares, on_share=self._on_share)
            else:
                mine(coordinator, self.source, options.blocks, self._on_block, on_job=reporter.job)
        except KeyboardInterrupt:
            interrupted = True
        except MinerError as exc:
            failure = exc
        finally:
            # A second Ctrl-C or SIGTERM while shutting down must not cost the summary.
            previous = ignore_stop_signals()
            # Units in flight stop at their next cancellation check; an append is one SQLite
            # transaction, so whatever happens here no block is left half-written.
            staged.stop()
            coordinator.stop()
            reporter.stop()
            self._release()
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
        summary = mine_summary(coordinator, self.found, time.perf_counter() - t0, interrupted)
        if self.shares is not None:
            summary["shares"] = self.shares.as_dict()
        reporter.finish(summary)
        restore_handlers(previous)
        if failure is not None:
            raise failure
        return 130 if interrupted else 0

    def _release(self) -> None:
        if self.release is not None:
            self.release()

    def _serve_metrics(self, coordinator: Coordinator) -> Any:
        """The /metrics server, when asked for (its port is added to the description); a port
        that cannot be had ends the run before it starts, with what it holds released."""
        if self.options.metrics is None:
            return None
        from miner.mining.metrics import MinerCollector, serve_metrics  # prometheus_client: only when asked

        try:
            server, port = serve_metrics(MinerCollector(coordinator, self.found, self.shares, self.pool),
                                         *self.options.metrics)
        except BaseException:
            self._release()
            raise
        self.describe["metrics"] = f"http://{self.options.metrics[0]}:{port}/metrics"
        return server

    def _on_block(self, ev: BlockFound) -> None:
        if ev.verdict in ("", "accepted"):  # a node's refusal is reported, not counted
            self.found.append(ev)
        if self.shares is not None:
            self.shares.add(ev.verdict == "accepted", ev.verdict, DIFF1_TARGET / max(int(ev.hash_hex, 16), 1),
                            block=True)
        self.reporter.block(ev)

    def _on_share(self, ev: ShareFound) -> None:
        assert self.shares is not None
        self.shares.add(ev.accepted, ev.verdict, ev.difficulty)
        self.reporter.share(ev, self.shares)

    def _warm_up_all(self) -> None:
        """--wait-for-kernels: every backend compiled (or loaded) before the first hash."""
        for backend in self.backends:
            t0 = time.perf_counter()
            backend.warm_up()
            self.reporter.backend_event({"event": "backend", "backend": backend.name, "status": "ready",
                                         "seconds": time.perf_counter() - t0,
                                         "message": f"{backend.name}: {backend.device}, ready after "
                                                    f"{time.perf_counter() - t0:.1f} s"})


def mine_summary(coordinator: Coordinator, found: list[BlockFound], elapsed: float, interrupted: bool) -> dict:
    """The end-of-run figures, per backend and in total (also the `--json` summary event)."""
    stats = coordinator.stats
    hashes = sum(s.hashes for s in stats.values())
    per_backend = [{"name": b.name, "device": b.device, "hashes": stats[b.name].hashes,
                    "rate": stats[b.name].hashes / stats[b.name].seconds if stats[b.name].seconds else 0.0,
                    "share": stats[b.name].hashes / hashes if hashes else 0.0,
                    "hits": stats[b.name].hits, "stale": stats[b.name].stale,
                    "rejected": stats[b.name].rejected}
                   for b in coordinator.backends]
    return {"event": "summary", "blocks": len(found), "seconds": elapsed, "hashes": hashes,
            "rate": hashes / elapsed if elapsed else 0.0, "interrupted": interrupted,
            "backends": per_backend}
