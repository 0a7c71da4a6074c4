"""`miner mine --metrics-port`: the miner's figures for Prometheus, with the official client.

A collector reads the coordinator's counters (per backend: rate, hashes, hits, stale hits,
candidates the host re-check refused) and, at a pool, the verdicts on our shares and the state
of the connection, at each scrape. The page is served by the client library's own threaded
server on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from miner.errors import MinerError
from miner.mining.coordinator import Coordinator
from miner.mining.loop import ShareTally


class PoolStatus:
    """The pool connection as its events tell it: where, whether connected, at what difficulty.
    Each event is passed on to `forward` (the reporter) once it is counted."""

    def __init__(self, forward: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._forward = forward
        self.url = ""
        self.connected = False
        self.difficulty = 0.0
        self.connections = 0
        self._lock = threading.Lock()

    def update(self, event: dict[str, Any]) -> None:
        with self._lock:
            status = event.get("status")
            if status == "connected":
                self.url, self.connected = event["url"], True
                self.connections += 1
            elif status == "disconnected":
                self.connected = False
            elif status == "difficulty":
                self.difficulty = event["difficulty"]
        if self._forward is not None:
            self._forward(event)


class MinerCollector:
    def __init__(self, coordinator: Coordinator, blocks: list, tally: ShareTally | None = None,
                 pool: PoolStatus | None = None):
        self.coordinator = coordinator
        self.blocks = blocks  # the run's accepted blocks, appended as they come
        self.tally = tally
        self.pool = pool
        self.started = time.time()

    def collect(self) -> Iterator[Metric]:
        labels = ["backend"]
        rate = GaugeMetricFamily("powminer_mine_hashrate", "Recent hash rate (hashes/s).", labels=labels)
        hashes = CounterMetricFamily("powminer_mine_hashes", "Hashes computed.", labels=labels)
        hits = CounterMetricFamily("powminer_mine_hits", "Hashes that met the target.", labels=labels)
        stale = CounterMetricFamily("powminer_mine_stale_hits", "Hits dropped: their job had been replaced.",
                                    labels=labels)
        bad = CounterMetricFamily("powminer_mine_rejected_candidates", "Candidates the host re-check "
                                  "refused (a broken kernel or device).", labels=labels)
        for backend in self.coordinator.backends:
            stats = self.coordinator.stats[backend.name]
            rate.add_metric([backend.name], stats.rate)
            hashes.add_metric([backend.name], stats.hashes)
            hits.add_metric([backend.name], stats.hits)
            stale.add_metric([backend.name], stats.stale)
            bad.add_metric([backend.name], stats.rejected)
        yield from (rate, hashes, hits, stale, bad)
        yield CounterMetricFamily("powminer_mine_blocks", "Blocks accepted.", value=len(self.blocks))
        yield GaugeMetricFamily("powminer_mine_start_time_seconds", "When the run began (Unix time).",
                                value=self.started)
        if self.tally is not None:
            shares = CounterMetricFamily("powminer_mine_shares", "Shares by the pool's verdict and reason.",
                                         labels=["result", "reason"])
            shares.add_metric(["accepted", ""], self.tally.accepted)
            for reason, n in sorted(self.tally.reasons.items()):
                shares.add_metric(["rejected", reason], n)
            yield shares
            yield GaugeMetricFamily("powminer_mine_best_share_difficulty", "The best accepted share's difficulty.",
                                    value=self.tally.best)
        if self.pool is not None:
            up = GaugeMetricFamily("powminer_mine_pool_connected", "1 while a pool is connected.", labels=["url"])
            up.add_metric([self.pool.url], 1.0 if self.pool.connected else 0.0)
            yield up
            yield GaugeMetricFamily("powminer_mine_pool_difficulty", "The pool's share difficulty.",
                                    value=self.pool.difficulty)
            yield CounterMetricFamily("powminer_mine_pool_connections", "Connections the pool authorized.",
                                      value=self.pool.connections)


def serve_metrics(collector: MinerCollector, host: str, port: int) -> tuple[Any, int]:
    """Serve /metrics (any path, as the client library does) on host:port; (server, bound port)."""
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MinerError(f"cannot listen for metrics on {host}:{port}: {exc.strerror}") from None
    return server, server.server_port
