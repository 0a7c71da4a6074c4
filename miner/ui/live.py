"""What `miner mine` shows while it works: a snapshot of the coordinator and chain, and its rich view.

`snapshot` is plain arithmetic over the coordinator's counters and the current job, so it is
tested directly; `MiningView` only lays a snapshot out, once per refresh of a `rich.live.Live`.
The expected time to the next block is the expected number of hashes for the job's target,
2^256 / (target + 1), over the summed measured rate of every backend.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from miner.backends.base import Backend
from miner.mining.coordinator import Coordinator
from miner.mining.work import Job
from miner.primitives.compact import difficulty
from miner.ui.units import format_rate


@dataclass(frozen=True)
class DeviceLine:
    name: str
    device: str
    rate: float  # hashes/s, recent
    hashes: int
    hits: int  # verified hits counted by the kernel (all units of all jobs)
    stale: int  # hits dropped because a newer job had arrived
    rejected: int  # candidates that failed the host re-check (should stay 0)
    share: float  # this backend's fraction of all hashes done


@dataclass(frozen=True)
class MiningSnapshot:
    devices: tuple[DeviceLine, ...]
    total_rate: float
    tip_height: int | None  # height of the block being built on, None before the first job
    bits: int | None
    difficulty: float | None
    expected_seconds: float | None  # to find the current block at the measured total rate
    block_seconds: float  # time spent on the current block so far
    blocks_found: int
    blocks_wanted: int  # 0: until stopped
    elapsed: float  # since mining started
    pool: str = ""  # at a pool: where, its difficulty, and its verdicts on our shares
    shares: bool = False  # the job's target is a pool's share target
    block_done: bool = False  # the job's block is found: the tip is that block, its timer stopped


def expected_hashes(target: int) -> float:
    """Mean number of hashes until one is at or below `target`."""
    return (1 << 256) / (target + 1)


def snapshot(coordinator: Coordinator, backends: list[Backend], job: Job | None,
             job_started: float, blocks_found: int, blocks_wanted: int, started: float,
             now: float | None = None, pool: str = "", found: tuple[int, float] | None = None
             ) -> MiningSnapshot:
    """The panel's figures at `now`. `found` is (height, when) of the last block the chain took:
    once it is the current job's block, the tip is that block and its time is stopped, so the
    frame drawn after the last block (before any next job, or at the end) is not a block behind.
    A pool's share job is not done by a block: it keeps being mined for shares."""
    now = time.perf_counter() if now is None else now
    stats = [coordinator.stats[b.name] for b in backends]
    total_hashes = sum(s.hashes for s in stats)
    devices = tuple(
        DeviceLine(b.name, b.device, s.rate, s.hashes, s.hits, s.stale, s.rejected,
                   s.hashes / total_hashes if total_hashes else 0.0)
        for b, s in zip(backends, stats))
    total_rate = sum(d.rate for d in devices)
    if job is None:
        return MiningSnapshot(devices, total_rate, None, None, None, None, 0.0, blocks_found,
                              blocks_wanted, now - started, pool)
    done = found is not None and not job.shares and found[0] >= job.height
    return MiningSnapshot(
        devices, total_rate, found[0] if done else job.height - 1, job.bits, difficulty(job.target),
        expected_hashes(job.target) / total_rate if total_rate > 0 else None,
        (found[1] if done else now) - job_started, blocks_found, blocks_wanted, now - started, pool,
        job.shares, done)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.3g} days"


# The columns beside the device (backend, rate, hashes, hits, stale, share, bar) and the spaces
# between them: what a terminal must have besides the device's own width for it to sit in a column.
FIGURES_WIDTH = 76


def fit_phrases(phrases: list[Text], width: int) -> list[Text]:
    """Phrases joined by two spaces, as many to a line as fit in `width`: a line breaks between
    phrases, never inside one ("next block expected in" / "1.2 s" read as two facts)."""
    lines: list[Text] = []
    for phrase in phrases:
        if lines and lines[-1].cell_len + 2 + phrase.cell_len <= width:
            lines[-1].append("  ")
            lines[-1].append_text(phrase)
        else:
            lines.append(phrase.copy())
    return lines


def _phrase(*parts: str | tuple[str, str]) -> Text:
    return Text.assemble(*parts)


def status_lines(snap: MiningSnapshot, width: int) -> list[Text]:
    """Where the chain stands (tip, bits, difficulty, blocks, time up), then how fast it goes
    (total rate, expected time to the next block): two lines where `width` allows, more where not."""
    blocks = f"{snap.blocks_found}" + (f"/{snap.blocks_wanted}" if snap.blocks_wanted else "")
    up = _phrase(("up ", "dim"), format_duration(snap.elapsed))
    found = _phrase(("blocks ", "dim"), (blocks, "bold green"))
    if snap.tip_height is None:
        return fit_phrases([Text("waiting for work"), found, up], width)
    what = "share" if snap.shares else "block"
    chain = [_phrase(("tip ", "dim"), (f"{snap.tip_height}", "bold")),
             _phrase(("bits ", "dim"), f"{snap.bits:08x}"),
             _phrase((f"{what} difficulty " if snap.shares else "difficulty ", "dim"), f"{snap.difficulty:.6g}"),
             found, up]
    speed = [_phrase(("total ", "dim"), (format_rate(snap.total_rate), "bold cyan")),
             _phrase((f"next {what} expected in ", "dim"), format_duration(snap.expected_seconds),
                     (" (this job " if snap.shares else " (last took " if snap.block_done else " (this one ", "dim"),
                     format_duration(snap.block_seconds), (")", "dim"))]
    return fit_phrases(chain, width) + fit_phrases(speed, width)


def render(snap: MiningSnapshot, width: int = 120) -> RenderableType:
    """The live panel for a terminal `width` wide: the status lines, then one line per backend.

    Every line fits `width` (80 columns included) without the terminal wrapping it: the status
    breaks between phrases, numbers are never cut, and a device description too long for its
    column goes on a line of its own below the table instead of being cut to "numba S…"."""
    longest_device = max((len(d.device) for d in snap.devices), default=0)
    device_column = longest_device <= width - FIGURES_WIDTH
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="dim")
    table.add_column("backend", no_wrap=True)
    if device_column:
        table.add_column("device", no_wrap=True)
    for name in ("rate", "hashes", "hits", "stale", "share"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("", width=12, no_wrap=True)
    for d in snap.devices:
        hits = f"{d.hits}" + (f" ({d.rejected} bad)" if d.rejected else "")
        table.add_row(d.name, *([d.device] if device_column else []), format_rate(d.rate), f"{d.hashes:,}", hits,
                      f"{d.stale}", f"{100 * d.share:.1f}%", ProgressBar(total=1.0, completed=d.share, width=12))
    parts: list[RenderableType] = list(status_lines(snap, width))
    if snap.pool:  # where, its difficulty, our shares: phrases the reporter joined with two spaces
        parts += fit_phrases([Text(phrase) for phrase in snap.pool.split("  ") if phrase], width)
    parts.append(table)
    if not device_column:
        parts += [Text.assemble((f"{d.name}: ", "dim"), d.device, no_wrap=True, overflow="ellipsis")
                  for d in snap.devices]
    return Group(*parts)


class MiningView:
    """Keeps the state the live panel needs; `rich.live.Live(get_renderable=view)` draws it."""

    def __init__(self, coordinator: Coordinator, backends: list[Backend], blocks_wanted: int):
        self.coordinator = coordinator
        self.backends = backends
        self.blocks_wanted = blocks_wanted
        self.blocks_found = 0
        self.started = time.perf_counter()
        self._job: Job | None = None
        self._job_started = self.started
        self._lock = threading.Lock()
        self.pool = ""  # the pool line: set by the reporter as the pool speaks
        self._found: tuple[int, float] | None = None  # (height, when) of the last block taken
        self._stopped: float | None = None  # when the run ended: the clocks stop there

    def set_job(self, job: Job | None) -> None:
        with self._lock:
            self._job = job
            self._job_started = time.perf_counter()

    def block_found(self, height: int | None = None, taken: bool = True) -> None:
        """Count a block; a `taken` one at `height` (the chain or node accepted it) becomes the
        tip the panel shows until the next job arrives."""
        with self._lock:
            self.blocks_found += 1
            if height is not None and taken:
                self._found = (height, time.perf_counter())

    def stop(self) -> None:
        """The run is over: later frames (the last one stays on screen) show the state at this
        moment, not a clock that kept running while the run shut down."""
        with self._lock:
            if self._stopped is None:
                self._stopped = time.perf_counter()

    def snapshot(self) -> MiningSnapshot:
        with self._lock:
            # the coordinator's own list: backends that join the run while it mines appear
            backends = list(self.coordinator.backends) if self.coordinator is not None else self.backends
            return snapshot(self.coordinator, backends, self._job, self._job_started,
                            self.blocks_found, self.blocks_wanted, self.started, now=self._stopped,
                            pool=self.pool, found=self._found)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield render(self.snapshot(), options.max_width)

    def __call__(self) -> MiningView:
        return self  # rich.live.Live(get_renderable=view): rendered afresh at each refresh
