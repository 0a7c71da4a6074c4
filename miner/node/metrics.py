"""The node's figures for Prometheus (`--metrics-port`), with the official client library.

A collector reads the live state at each scrape (the chain tip, the guard's connections, the
Stratum pool's statistics) instead of keeping a second copy of every count; the page is
rendered by `prometheus_client.generate_latest` and served by aiohttp on the node's loop,
through the same guard as every other face (a scraper is one more anonymous connection, in
the metrics page's own slots).

The page must cost the node next to nothing whoever scrapes it and however many worker names
strangers made up: it names only the busiest workers (`ranking`); it is rendered at most once a
`PAGE_MAX_AGE` (scrapes within it, or waiting for the render, get the same bytes), so any number
of scrapers cost one render a second; and of that render only the reading of the live figures
runs on the node's loop, the text is written in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from miner.errors import MinerError
from miner.node.guard import Guard
from miner.node.limits import METRICS
from miner.node.log_writer import unambiguous
from miner.node.service import Accepted, NodeService
from miner.node.stratum.ranking import OTHER, TOP_WORKERS, page_workers
from miner.node.stratum.server import StratumServer
from miner.node.stratum.stats import BROADCAST_BUCKETS, WINDOWS
from miner.primitives.compact import difficulty

PAGE_MAX_AGE = 1.0  # s a rendered page is served again before it is rendered anew
# Scrapes a second one connection is served (more wait their turn): the page changes once a
# second, and three scrapers back to back took the loop from honest miners (share p99 1.4 ->
# 22 ms) with nothing new to read.
SCRAPES_PER_SECOND = 10


class NodeCollector:
    """Everything `miner node` shows Prometheus, read at scrape time."""

    def __init__(self, service: NodeService, guard: Guard, stratum: StratumServer | None = None,
                 top_workers: int = TOP_WORKERS):
        self.service = service
        self.guard = guard
        self.stratum = stratum
        self.top_workers = top_workers
        self.blocks = 0
        service.listeners.append(self._accepted)

    def _accepted(self, accepted: Accepted) -> None:
        self.blocks += 1

    def collect(self) -> Iterator[Metric]:
        tip = self.service.tip
        if tip is not None:
            yield GaugeMetricFamily("powminer_node_height", "Height of the active chain's tip.", value=tip.height)
            yield GaugeMetricFamily("powminer_node_difficulty", "Difficulty of the next block.",
                                    value=difficulty(tip.next_target))
        yield CounterMetricFamily("powminer_node_blocks", "Blocks that became the tip since the node started.",
                                  value=self.blocks)
        census = GaugeMetricFamily("powminer_node_connections", "Open connections by face and by what they "
                                   "proved.", labels=["face", "state"])
        outcomes = CounterMetricFamily("powminer_node_connection_events", "Connections admitted, refused, "
                                       "evicted and timed out by the guard, and handshakes refused for want of "
                                       "a slot (full) or given one another left (displaced), by face.",
                                       labels=["face", "outcome"])
        for face, states in self.guard.census().items():
            for state, n in states.items():
                census.add_metric([face, state], n)
            counts = self.guard.face_counts(face)
            for outcome in ("admitted", "refused", "evicted", "timed_out", "full", "displaced"):
                outcomes.add_metric([face, outcome], getattr(counts, outcome))
        yield census
        yield outcomes
        if self.stratum is not None:
            yield from self._stratum(self.stratum)

    def _stratum(self, pool: StratumServer) -> Iterator[Metric]:
        stats = pool.stats
        connected = pool.workers_connected()
        yield GaugeMetricFamily("powminer_stratum_connections", "Stratum connections.", value=len(pool.sessions))
        yield GaugeMetricFamily("powminer_stratum_workers", "Worker names with a live connection.",
                                value=len(connected))
        shares = CounterMetricFamily("powminer_stratum_shares", "Shares by verdict, and refusals by reason.",
                                     labels=["result", "reason"])
        shares.add_metric(["accepted", ""], stats.accepted)
        for reason, n in sorted(stats.refused.items()):
            shares.add_metric(["rejected", reason], n)
        yield shares
        dropped = CounterMetricFamily("powminer_stratum_dropped_connections", "Connections the server ended, "
                                      "by reason.", labels=["reason"])
        for reason, n in sorted(stats.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield CounterMetricFamily("powminer_stratum_blocks", "Shares that were blocks the chain stored.",
                                  value=stats.blocks)
        yield GaugeMetricFamily("powminer_stratum_blocks_orphaned", "The pool's blocks now off the active "
                                "chain (side branches, orphaned).", value=stats.blocks_orphaned)
        yield GaugeMetricFamily("powminer_stratum_best_share_difficulty", "The best share's difficulty.",
                                value=stats.best_share)
        if pool.job_made_at:
            yield GaugeMetricFamily("powminer_stratum_job_age_seconds", "Age of the current job's template.",
                                    value=max(0.0, time.time() - pool.job_made_at))
        buckets, total = [], 0
        for bound, n in zip((*map(str, BROADCAST_BUCKETS), "+Inf"), stats.broadcast_buckets):
            total += n
            buckets.append((bound, total))
        yield HistogramMetricFamily("powminer_stratum_job_broadcast_seconds",
                                    "Time for a new job to be written to every miner.", buckets=buckets,
                                    sum_value=stats.broadcast_sum)
        rate = GaugeMetricFamily("powminer_stratum_worker_hashrate", "Hash rate estimated from accepted "
                                 "shares (hashes/s).", labels=["worker", "window"])
        accepted = CounterMetricFamily("powminer_stratum_worker_shares", "A worker's shares by verdict.",
                                       labels=["worker", "result", "reason"])
        best = GaugeMetricFamily("powminer_stratum_worker_best_share_difficulty", "A worker's best share.",
                                 labels=["worker"])
        diff = GaugeMetricFamily("powminer_stratum_worker_difficulty", "A worker's share difficulty.",
                                 labels=["worker"])
        now = stats.clock()
        shown, others = page_workers(stats, now, self.top_workers)
        for worker in shown:
            name = unambiguous(worker.name)  # a client's string: a lone surrogate cannot be encoded
            for (label, _), value in zip(WINDOWS, stats.hashrates(worker, now).values()):
                rate.add_metric([name, label], value)
            accepted.add_metric([name, "accepted", ""], worker.accepted)
            for reason, n in sorted(worker.refused.items()):
                accepted.add_metric([name, "rejected", reason], n)
            best.add_metric([name], worker.best_share)
            diff.add_metric([name], worker.difficulty)
        if others.workers or others.accepted or others.refused:
            for label, value in others.hashrates.items():
                rate.add_metric([OTHER, label], value)
            accepted.add_metric([OTHER, "accepted", ""], others.accepted)
            for reason, n in sorted(others.refused.items()):
                accepted.add_metric([OTHER, "rejected", reason], n)
            best.add_metric([OTHER], others.best_share)
        yield from (rate, accepted, best, diff)
        yield GaugeMetricFamily("powminer_stratum_workers_other", f'Active workers summed under worker="{OTHER}" '
                                "(beyond the busiest named ones).", value=others.workers)


class _Snapshot:
    """Metric families read once, for `generate_latest` to write out in another thread."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class CachedPage:
    """The rendered page, rendered again only once it is `max_age` seconds old; scrapes that
    arrive during a render wait for that one."""

    def __init__(self, registry: CollectorRegistry, max_age: float = PAGE_MAX_AGE, clock=time.monotonic):
        self.registry, self.max_age, self.clock = registry, max_age, clock
        self._body = b""
        self._rendered: float | None = None
        self._rendering: asyncio.Future[bytes] | None = None
        self.renders = 0

    async def body(self) -> bytes:
        if self._rendered is not None and self.clock() - self._rendered < self.max_age:
            return self._body
        if self._rendering is None:
            self._rendering = asyncio.ensure_future(self._render())
        return await asyncio.shield(self._rendering)

    async def _render(self) -> bytes:
        try:
            families = list(self.registry.collect())  # the live figures, read on the loop
            self._body = await asyncio.to_thread(generate_latest, _Snapshot(families))  # type: ignore[arg-type]
            self._rendered = self.clock()
            self.renders += 1
            return self._body
        finally:
            self._rendering = None


def metrics_app(registry: CollectorRegistry, guard: Guard) -> web.Application:
    page = CachedPage(registry)

    async def metrics(request: web.Request) -> web.Response:
        conn = guard.connection(request.transport)
        if conn is not None:
            await conn.throttle(guard.limits.rate / SCRAPES_PER_SECOND)
            conn.begin()
        try:
            return web.Response(body=await page.body(), headers={"Content-Type": CONTENT_TYPE_LATEST})
        finally:
            if conn is not None:
                conn.end()

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def serve_metrics(registry: CollectorRegistry, guard: Guard, host: str,
                        port: int) -> tuple[web.AppRunner, asyncio.base_events.Server, int]:
    """Serve /metrics on host:port through the guard; (runner, server, bound port)."""
    runner = web.AppRunner(metrics_app(registry, guard), access_log=None, handle_signals=False,
                           shutdown_timeout=1.0)
    await runner.setup()
    try:
        server = await guard.listen(runner.server, host, port, METRICS)
    except OSError as exc:
        await runner.cleanup()
        raise MinerError(f"cannot listen for metrics on {host}:{port}: {exc.strerror}") from None
    return runner, server, server.sockets[0].getsockname()[1]
