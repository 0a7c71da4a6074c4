"""The `miner compare` engine: every backend on the same job and nonce range, hits cross-checked."""

from __future__ import annotations

import time
from dataclasses import dataclass

from miner.backends.base import Backend
from miner.work import KernelWork


@dataclass
class CompareRow:
    backend: str
    device: str
    seconds: float
    rate: float
    hits: list[int]
    total: int


def compare(backends: list[Backend], work: KernelWork, start: int, count: int) -> list[CompareRow]:
    rows = []
    for b in backends:
        b.warm_up()
        b.search(work, start, min(count, 1024))  # first-call effects out of the timing
        t0 = time.perf_counter()
        r = b.search(work, start, count)
        dt = time.perf_counter() - t0
        rows.append(CompareRow(b.name, b.device, dt, count / dt, r.nonces, r.total))
    return rows


def mismatches(rows: list[CompareRow]) -> list[str]:
    """Backends whose hits differ from the first row's (normally the hashlib reference)."""
    base = rows[0]
    return [r.backend for r in rows[1:] if (r.total, sorted(r.hits)) != (base.total, sorted(base.hits))]


def plot(rows: list[CompareRow], out: str) -> None:
    from miner.plot import _pyplot, save_png
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh([f"{r.backend}\n{r.device}" for r in rows], [r.rate / 1e6 for r in rows])
    ax.set_xlabel("MH/s (same job, same nonce range)")
    ax.set_xscale("log")
    fig.tight_layout()
    save_png(fig, out)
