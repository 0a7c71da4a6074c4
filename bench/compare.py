"""The `miner compare` engine: every backend on the same job, hits cross-checked, speeds measured.

Two separate questions, two separate measurements:

* **Do the backends agree?** Every backend searches the same range of an easy-target job (a few
  dozen hits) and must report the same nonces. That run goes through each kernel's exact path
  on every chunk with a candidate, so its duration says nothing about kernel speed.
* **How fast is each?** The rate comes from `bench_backend` on a hard target (no hit, ever: the
  kernel's fast path only), after warm-up, as the median of several timed runs. Timing the
  agreement search instead understated the CPU backend by half: 40 ms of work, thread start-up
  included, with candidate chunks rescanned on the slow path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from miner.bench.engine import bench_backend

from miner.backends.base import Backend
from miner.backends.work import KernelWork


@dataclass
class CompareRow:
    backend: str
    device: str
    rate: float  # hashes/s on a hard target: median of `runs`
    runs: list[float]
    hits: list[int]  # on the easy target
    total: int
    check_seconds: float  # the agreement search's wall time (not a speed)
    others_busy: float | None = None  # share of the CPU other programs took during the timed runs


def compare(backends: list[Backend], work: KernelWork, start: int, count: int,
            seconds: float = 0.5, runs: int = 3) -> list[CompareRow]:
    rows = []
    for b in backends:
        b.warm_up()
        t0 = time.perf_counter()
        r = b.search(work, start, count)
        check = time.perf_counter() - t0
        speed = bench_backend(b, seconds, runs, pow=work.pow)
        rows.append(CompareRow(b.name, b.device, speed.median, speed.runs, r.nonces, r.total, check,
                               speed.others_busy))
    return rows


def mismatches(rows: list[CompareRow]) -> list[str]:
    """Backends whose hits differ from the first row's (normally the hashlib reference)."""
    base = rows[0]
    return [r.backend for r in rows[1:] if (r.total, sorted(r.hits)) != (base.total, sorted(base.hits))]


POW_TITLES = {"sha256d": "SHA-256d", "scrypt": "scrypt (N=1024, r=1, p=1)"}


def plot(rows: list[CompareRow], out: str, pow: str = "sha256d") -> list[str]:
    """Horizontal bars on a log axis, each labelled with its rate and its speed-up over the first
    row; the axis itself gets labels only at powers of ten, so none run together. The title names
    the proof of work compared and whether the hits agreed; the axis is in the unit of the slowest
    bar (scrypt's kH/s, SHA-256d's MH/s), so no bar sits below 1. Returns the bar labels."""
    import textwrap

    from matplotlib.ticker import LogLocator, NullFormatter

    from miner.ui.plot import _pyplot, save_figure
    from miner.ui.units import format_rate, format_ratio, rate_unit
    plt = _pyplot()
    texts = []
    unit, scale = rate_unit(min(r.rate for r in rows))
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.75 * len(rows)))
    # the device name wrapped to a few short lines: a long one would squeeze the bars to nothing
    labels = [f"{r.backend}\n" + "\n".join(textwrap.wrap(r.device, 28)[:3]) for r in rows]
    rates = [r.rate / scale for r in rows]
    bars = ax.barh(labels, rates, color="tab:blue")
    base = rows[0].rate
    for bar, r in zip(bars, rows):
        texts.append(f"{format_rate(r.rate)}  ({format_ratio(r.rate / base)} {rows[0].backend})")
        ax.annotate(" " + texts[-1], (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    va="center", fontsize=9)
    ax.set_xscale("log")
    ax.set_xlim(min(rates) / 2, max(rates) * 30)  # room for the labels right of the longest bar
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.invert_yaxis()  # first row on top
    ax.set_xlabel(f"{unit} on a hard target (median of timed runs; log scale)")
    ax.tick_params(axis="y", labelsize=8)
    bad = mismatches(rows)
    backends = f"{len(rows)} backend" + ("" if len(rows) == 1 else "s")
    agreed = f"hits differ on {', '.join(bad)}" if bad else "same hits"
    ax.set_title(f"{POW_TITLES.get(pow, pow)} on the same job and nonces: {backends}, {agreed}")
    fig.tight_layout()
    fig.canvas.draw()
    # What the old chart got wrong: every minor tick of the log axis had a label, and they overlapped.
    assert not [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    save_figure(fig, out)
    return texts
