"""Plots of block spacing and difficulty (matplotlib, headless Agg backend), written as PNG, SVG
or PDF, whichever the file name's suffix says."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from miner.errors import InvalidInput
from miner.primitives.compact import bits_to_target, difficulty


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InvalidInput("plots need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def rolling_mean(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def chain_figure(series: dict[str, tuple[Sequence[int], Sequence[int]]], spacing: int, title: str,
                 marker: int | None = None, window: int = 10, first: int = 0):
    """One panel of block spacing (each block's as a dot, and the rolling mean as a line: a
    mean alone hides which block a pause was) and one of difficulty, per named chain.

    `series` maps a label to (times, bits) indexed by height from `first`. The dots are drawn
    large and nearly opaque above the mean line, and the legend sits right of the panels, not
    on them: small faint dots under a legend box hid the very pauses the panel is there to show.
    """
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    for label, (times, bits) in series.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        heights = list(range(first + 1, first + len(times)))
        line, = ax1.plot(heights, rolling_mean(gaps, window), label=f"{label} ({window}-block mean)")
        ax1.scatter(heights, gaps, s=14, alpha=0.8, color=line.get_color(), edgecolors="none", zorder=3,
                    label=f"{label} (each block)")
        ax2.plot(range(first, first + len(bits)), [difficulty(bits_to_target(b)) for b in bits], label=label)
    ax1.axhline(spacing, color="grey", linestyle="--", linewidth=1, label=f"target {spacing} s")
    ax1.set_ylabel("block spacing, s")
    ax2.set_ylabel("difficulty")
    ax2.set_yscale("log")
    ax2.set_xlabel("height")
    if marker is not None:
        for ax in (ax1, ax2):
            ax.axvline(marker, color="red", linestyle=":", linewidth=1)
    ax1.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8)
    ax1.set_title(title)
    fig.tight_layout()
    return fig


def plot_chains(out: str | Path, series: dict[str, tuple[Sequence[int], Sequence[int]]],
                spacing: int, title: str, marker: int | None = None, window: int = 10,
                first: int = 0) -> Path:
    """`chain_figure`, written to `out` (.png, .svg or .pdf)."""
    return save_figure(chain_figure(series, spacing, title, marker, window, first), out)


FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def check_output_path(out: str | Path) -> Path:
    """A path a plot can be written to: a .png, .svg or .pdf name in a folder that exists
    (checked before any work)."""
    path = Path(out)
    if path.is_dir():
        raise InvalidInput(f"{path}: is a folder; give a file name ending .png, .svg or .pdf")
    if path.suffix.lower() not in FORMATS:
        raise InvalidInput(f"{path}: give a file name ending .png, .svg or .pdf (the format it is written in)")
    if not path.parent.is_dir():
        raise InvalidInput(f"{path.parent}: no such directory")
    return path


def save_figure(fig, out: str | Path) -> Path:
    """Write `fig` to exactly `out` in the format its suffix names, and close it. An SVG keeps
    its words as text (not outlines): a reader can search and copy the title and labels."""
    plt = _pyplot()
    path = check_output_path(out)
    try:
        with plt.rc_context({"svg.fonttype": "none"}):
            fig.savefig(path, dpi=110, format=FORMATS[path.suffix.lower()])
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path
