"""Which workers the metrics page names, and what it sums for the rest.

Worker names are chosen by whoever connects: 10,000 of them once made every scrape a 9 MB page
rendered in most of a second on the node's loop. The page therefore names the `top` workers by
work (the difficulty credited to their accepted shares) among those seen within `idle_after`
seconds, and sums every other active worker under one series, `worker="*other*"` (a worker that
calls itself that is summed there too, so no two series share labels). Workers idle longer
leave the page; `getstratuminfo` still reports every worker the pool remembers.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from miner.node.stratum.stats import WINDOWS, PoolStats, WorkerStats

OTHER = "*other*"
TOP_WORKERS = 100  # named one by one on the page (--metrics-top-workers)
PAGE_IDLE = 300.0  # s without an authorize or a share before a worker leaves the page


@dataclass
class Others:
    """Everything of the pool's that the page does not name: the active workers beyond the top
    ones (counted, and their best share), and the shares, refusals and hash rate of the whole
    pool less the named workers' (so workers gone idle or forgotten stay in the totals)."""

    workers: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    best_share: float = 0.0
    hashrates: dict[str, float] = field(default_factory=dict)


def page_workers(stats: PoolStats, now: float, top: int = TOP_WORKERS,
                 idle_after: float = PAGE_IDLE) -> tuple[list[WorkerStats], Others]:
    """The workers named on the page (most work first) and the rest of the pool, summed. Costs a
    pass over the active workers and a few figures for each named one: the rest is the pool's
    totals less the named workers', not a sum over thousands of workers."""
    active = []
    for worker in reversed(stats.workers.values()):  # most recently seen first
        if now - worker.last_seen >= idle_after:
            break
        active.append(worker)
    named = [w for w in active if w.name != OTHER]
    shown = heapq.nlargest(top, named, key=lambda w: (w.accepted_difficulty, w.last_seen))
    chosen = {id(w) for w in shown}
    others = Others(workers=len(active) - len(shown),
                    accepted=stats.accepted - sum(w.accepted for w in shown),
                    best_share=max((w.best_share for w in active if id(w) not in chosen), default=0.0))
    for reason, n in stats.refused.items():
        rest = n - sum(w.refused.get(reason, 0) for w in shown)
        if rest > 0:
            others.refused[reason] = rest
    for i, (label, _) in enumerate(WINDOWS):
        rest = stats.rates[i].raw(now) - sum(w.rates[i].raw(now) for w in shown)
        others.hashrates[label] = max(0.0, rest) * stats.hashes_per_difficulty
    return shown, others
