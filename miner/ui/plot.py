"""PNG plots of block spacing and difficulty (matplotlib, headless Agg backend)."""

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


def plot_chains(out: str | Path, series: dict[str, tuple[Sequence[int], Sequence[int]]],
                spacing: int, title: str, marker: int | None = None, window: int = 10) -> Path:
    """One panel of rolling mean spacing and one of difficulty, one line per named chain.

    `series` maps a label to (times, bits) indexed by height.
    """
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for label, (times, bits) in series.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        heights = list(range(1, len(times)))
        ax1.plot(heights, rolling_mean(gaps, window), label=label)
        ax2.plot(range(len(bits)), [difficulty(bits_to_target(b)) for b in bits], label=label)
    ax1.axhline(spacing, color="grey", linestyle="--", linewidth=1, label=f"target {spacing} s")
    ax1.set_ylabel(f"block spacing, s ({window}-block mean)")
    ax2.set_ylabel("difficulty")
    ax2.set_yscale("log")
    ax2.set_xlabel("height")
    if marker is not None:
        for ax in (ax1, ax2):
            ax.axvline(marker, color="red", linestyle=":", linewidth=1)
    ax1.legend(loc="upper right")
    ax1.set_title(title)
    fig.tight_layout()
    return save_png(fig, out)


def check_output_path(out: str | Path) -> Path:
    """A path a plot can be written to: its folder must exist (checked before any work)."""
    path = Path(out)
    if path.is_dir():
        raise InvalidInput(f"{path}: is a folder; give a file name for the PNG")
    if not path.parent.is_dir():
        raise InvalidInput(f"{path.parent}: no such directory")
    return path


def save_png(fig, out: str | Path) -> Path:
    """Write `fig` as PNG to exactly `out`, whatever its suffix (matplotlib would otherwise pick
    the format from the suffix, or append .png), and close it."""
    plt = _pyplot()
    path = check_output_path(out)
    try:
        fig.savefig(path, dpi=110, format="png")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path
