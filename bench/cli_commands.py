"""The `miner bench` and `miner compare` commands: what they measure and how they print it.

They live beside the engine they drive (`engine.py`, `compare.py`, `sass.py`) rather than in
`miner/cli/main.py`, which only parses arguments and dispatches; installed, this folder is `miner.bench`.
In `miner/cli/` they would still import the engine, and `bench/peers.py`, which reuses their
thread and kernel choices, would import upward into the CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from miner.backends.base import MAX_THREADS
from miner.errors import InvalidInput, UsageError
from miner.ui.units import format_rate, format_ratio, rate_unit


def _thread_counts(text: str | None) -> list[int]:
    from miner.backends.cpu import default_threads
    if text is None:
        return sorted({1, default_threads()})
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--threads must be comma-separated whole numbers, got {text!r}") from None
    if not counts or min(counts) < 1 or max(counts) > MAX_THREADS:
        bad = next((c for c in counts if not 1 <= c <= MAX_THREADS), text)
        raise UsageError(f"argument --threads: must be between 1 and {MAX_THREADS:,}, got {bad}")
    return counts


def _cpu_kernels(choice: str | None) -> list[str]:
    """`--cpu-kernel` for bench: every kernel this CPU runs (all, the default), or one."""
    from miner.kernels import cpu_select
    if choice in (None, "all"):
        return cpu_select.available()
    if cpu_select.check_choice(choice) == "auto":
        # measure the choice `miner mine` keeps again, now, and keep the new answer
        kernel, why = cpu_select.choose("auto", remeasure=True)
        print(f"cpu kernel for auto: {kernel} ({why})", file=sys.stderr)
        return [kernel]
    return [cpu_select.check_choice(choice)]


def parse_launch_shapes(text: str) -> list[tuple[int, int]] | None:
    """`--launch`: "all" (the autotune grid), "tuned" (None: the backend's own shape), or a
    comma-separated list of BLOCKxNONCES_PER_THREAD such as "256x16,256x64"."""
    from miner.backends.cuda import (
        BLOCK_CHOICES,
        NONCES_PER_THREAD_CHOICES,
        check_launch_shape,
    )
    text = text.strip().lower()
    if text == "tuned":
        return None
    if text == "all":
        return [(b, n) for b in BLOCK_CHOICES for n in NONCES_PER_THREAD_CHOICES]
    shapes = []
    for item in text.split(","):
        block, sep, npt = item.strip().partition("x")
        if not (sep and block.isdigit() and npt.isdigit()):
            raise UsageError(f"--launch wants BLOCKxNONCES like 256x64 (or all, tuned), got {item!r}")
        try:
            check_launch_shape(int(block), int(npt))
        except InvalidInput as exc:
            raise UsageError(f"--launch: {exc}") from None
        shapes.append((int(block), int(npt)))
    return shapes


def cmd_bench(args: argparse.Namespace) -> int:
    if args.static:
        items = {x.strip().lower().split(":")[0] for x in args.backend.split(",") if x.strip()}
        rc = 0
        if "cpu" in items:
            from miner.bench.cpu_model import static_report
            rc = static_report(min(args.duration, 0.5), args.json)
        if "cuda" in items:
            from miner.bench.sass import main as sass_main
            rc = rc or sass_main(["--json"] if args.json else [])
        if not items & {"cpu", "cuda"}:
            raise UsageError("--static models the cpu and cuda backends: name one of them in --backend")
        return rc
    if not 0 < args.duration <= 600:
        raise UsageError(f"--duration must be above 0 and at most 600 seconds, got {args.duration:g}")
    if not 0 < args.unit_seconds <= 10:
        raise UsageError(f"--unit-seconds must be above 0 and at most 10 seconds, got {args.unit_seconds:g}")
    shapes = parse_launch_shapes(args.launch)
    pow = getattr(args, "pow", "sha256d")
    plan, switch_set = _bench_plan(args, shapes, pow)
    try:
        results = [_timed_row(args, backend, setting, prepare, pow) for backend, setting, prepare in plan]
        switch = None
        if args.switches and pow == "sha256d":
            from miner.bench.engine import measure_job_switch
            _progress(args, f"measuring job switches across {', '.join(switch_set)} ...")
            switch = measure_job_switch(list(switch_set.values()), args.switches, args.unit_seconds)
    finally:
        for backend in {id(b): b for b, _, _ in plan}.values():
            backend.close()
    _print_bench(args, results, switch)
    return 0


def _progress(args: argparse.Namespace, line: str) -> None:
    if not args.json:
        print(line, file=sys.stderr, flush=True)


def _bench_plan(args: argparse.Namespace, shapes: list[tuple[int, int]] | None, pow: str) -> tuple[list, dict]:
    """The rows to time, as (backend, setting, prepare), and one backend per name for the
    job-switch test (the last, largest, setting of each)."""
    plan: list = []
    switch_set: dict = {}
    for item in (x.strip().lower() for x in args.backend.split(",") if x.strip()):
        if pow != "sha256d":
            plan += _other_pow_rows(args, item, pow)
        elif item == "cpu":
            plan += _cpu_rows(args, switch_set)
        else:
            plan += _device_rows(item, shapes, switch_set)
    return plan, switch_set


def _other_pow_rows(args: argparse.Namespace, item: str, pow: str) -> list:
    """One kernel per backend; the CPU's at each thread count."""
    from miner.backends.registry import make_backends
    return [(backend, f"{pow}" + (f" threads={n}" if n else ""), None)
            for n in (_thread_counts(args.threads) if item == "cpu" else [None])
            for backend in make_backends(item, threads=n, pow=pow, lookup_gap=args.lookup_gap)]


def _cpu_rows(args: argparse.Namespace, switch_set: dict) -> list:
    """Each CPU kernel asked for at each thread count."""
    from miner.backends.registry import make_backends
    rows = []
    for kernel in _cpu_kernels(args.cpu_kernel):
        for n in _thread_counts(args.threads):
            backend = make_backends("cpu", threads=n, cpu_kernel=kernel)[0]
            rows.append((backend, f"kernel={kernel} threads={n}", None))
            switch_set[backend.name] = backend
    return rows


def _device_rows(item: str, shapes: list[tuple[int, int]] | None, switch_set: dict) -> list:
    """A GPU at each launch shape asked for (or its tuned one); anything else once."""
    from miner.backends.registry import make_backends
    rows: list = []
    for backend in make_backends(item):
        switch_set[backend.name] = backend
        if backend.kind != "cuda":
            rows.append((backend, "", None))
        elif shapes is None:  # the autotuned shape (tuned on first use, then cached)
            rows.append((backend, "tuned", None))
        else:
            rows += [(backend, f"block={block} npt={npt}", lambda b=backend, s=(block, npt): b.set_launch(*s))
                     for block, npt in shapes]
    return rows


def _timed_row(args: argparse.Namespace, backend, setting: str, prepare, pow: str):
    """One row of the plan timed, its setting named as it ran (auto's kernel, the tuned shape)."""
    from miner.bench.engine import bench_backend, static_prediction
    _progress(args, f"measuring {backend.name} {setting} ...")
    if prepare:
        prepare()
    result = bench_backend(backend, args.duration, args.runs, setting, pow=pow)
    if backend.kind == "cpu" and getattr(backend, "kernel_preference", None) == "auto":
        result.setting = f"kernel={backend.kernel} (auto) threads={backend.threads}"
    if setting == "tuned":
        result.setting = f"block={backend.block} npt={backend.nonces_per_thread} (tuned)"
    result.predicted = static_prediction(backend)
    return result


def _print_bench(args: argparse.Namespace, results: list, switch) -> None:
    from miner.bench.engine import busy_notes, machine_description
    machine = machine_description()
    if args.json:
        print(json.dumps({"machine": machine, "date": time.strftime("%Y-%m-%d"), "runs": args.runs,
                          "duration": args.duration,
                          "results": [r.as_dict() for r in results],
                          "job_switch": switch.as_dict() if switch else None}, indent=2))
        return
    from rich.console import Console
    console = Console()
    for renderable in bench_report(results, machine, args.runs, args.duration):
        console.print(renderable, highlight=False)
    for note in busy_notes([(f"{r.backend} {r.setting}".strip(), r.others_busy) for r in results]):
        console.print(note, highlight=False)
    if switch:
        console.print(f"job switch ({', '.join(switch.backends)}, units of {switch.unit_seconds:g} s): "
                      f"new job on every backend after {switch.median * 1e3:.1f} ms median, "
                      f"{max(switch.samples) * 1e3:.1f} ms max over {len(switch.samples)} switches",
                      highlight=False)


def bench_report(results, machine: str, runs: int, duration: float) -> list:
    """The bench figures as two tables that fit 80 columns (rates, each row in its own unit;
    start-up costs), then one line per backend and device: device names are long, and in a column
    they squeezed the numbers into ellipses on any terminal under about 155 columns. A backend
    measured with several kernels or thread counts (cpu's SIMD and SHA kernels) has one line per
    device, so none is lost. No number is ever cut."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    ref = next((r.median for r in results if r.backend == "ref"), None)

    def table(title: str, numbers: tuple[str, ...]) -> Table:
        t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
        t.add_column("backend", no_wrap=True)
        t.add_column("setting", overflow="fold")  # words wrap; numbers never do
        for col in numbers:
            t.add_column(col, justify="right", no_wrap=True, min_width=len(col))
        return t

    rates = table(f"hash rate, median of {runs} x {duration:g} s",
                  ("median", "min", "max", "unit", "x hashlib"))
    rates.columns[-2].justify = "left"
    startup = table("start-up", ("compile s", "first call", "predicted"))
    devices: dict[tuple[str, str], None] = {}  # (backend, device), in order, each once
    for r in results:
        unit, scale = rate_unit(r.median)  # each row its own: hashlib's MH/s beside a GPU's GH/s
        rates.add_row(r.backend, r.setting, f"{r.median / scale:.2f}", f"{min(r.runs) / scale:.2f}",
                      f"{max(r.runs) / scale:.2f}", unit, f"{r.median / ref:.1f}" if ref else "-")
        startup.add_row(r.backend, r.setting,
                        f"{r.compile_seconds:.2f}" if r.compile_seconds is not None else "-",
                        f"{r.first_call_seconds * 1e3:.2f} ms" if r.first_call_seconds is not None else "-",
                        format_rate(r.predicted) if r.predicted else "-")
        devices[(r.backend, r.device)] = None
    lines = Text(f"miner bench on {machine}\n"
                 + "\n".join(f"  {name}: {device}" for name, device in devices))
    return [lines, rates, startup]


def cmd_compare(args: argparse.Namespace) -> int:
    from miner.bench.compare import compare, mismatches, plot

    from miner.backends.work import KernelWork
    if args.plot:
        from miner.ui.plot import check_output_path
        check_output_path(args.plot)  # before the measurement, not after it
    if not 0 < args.seconds <= 60:
        raise UsageError(f"--seconds must be above 0 and at most 60 seconds, got {args.seconds:g}")
    pow = args.pow
    if args.count is None:
        args.count = 1 << 21 if pow == "sha256d" else 1 << 11  # scrypt is ~5,000x slower a hash
    backends = _compared_backends(args, pow)
    # A target with a few dozen hits in the range: enough to prove the backends agree.
    target = ((1 << 256) // max(args.count, 1)) * 32
    work = KernelWork(bytes(range(76)), min(target, (1 << 256) - 1), pow=pow)
    for b in backends:
        b.max_hits = 1 << 12
    try:
        rows = compare(backends, work, 0, args.count, seconds=args.seconds, runs=args.runs)
    finally:
        for b in backends:
            b.close()
    bad = mismatches(rows)
    (_print_compare_json if args.json else _print_compare)(args, rows, bad)
    if args.plot:
        plot(rows, args.plot, pow=pow)
    return 1 if bad else 0


def _compared_backends(args: argparse.Namespace, pow: str) -> list:
    """The backends asked for (by default every kind this machine has), hashlib first."""
    from miner.backends.registry import cuda_device_count, make_backends
    spec = args.backend
    if spec is None:
        count, why = cuda_device_count()
        spec = "ref,cpu" + (",cuda" if count and pow == "sha256d" else "")
        if not count and not args.json:
            print(f"comparing the CPU backends only; no GPU here: {why}", file=sys.stderr)
    backends = make_backends(spec, cpu_kernel=args.cpu_kernel, pow=pow, lookup_gap=args.lookup_gap)
    if backends[0].kind != "ref":
        backends = make_backends("ref", pow=pow) + backends
    return backends


def _cpu_rate(rows: list) -> float | None:
    return next((r.rate for r in rows if r.backend.startswith("cpu")), None)


def _print_compare_json(args: argparse.Namespace, rows: list, bad: list) -> None:
    ref_rate, cpu_rate = rows[0].rate, _cpu_rate(rows)
    print(json.dumps({"count": args.count, "agree": not bad, "mismatches": bad,
                      "speed": {"target": "hard (no hits)", "seconds_per_run": args.seconds,
                                "runs": args.runs},
                      "rows": [{**r.__dict__, "hits": len(r.hits), "x_ref": r.rate / ref_rate,
                                "x_cpu": r.rate / cpu_rate if cpu_rate else None} for r in rows]},
                     indent=2))


def _print_compare(args: argparse.Namespace, rows: list, bad: list) -> None:
    ref_rate, cpu_rate = rows[0].rate, _cpu_rate(rows)
    print(f"hits: {args.count:,} nonces of an easy-target job on every backend;\nspeed: median "
          f"of {args.runs} x {args.seconds:g} s on a hard target (kernel fast path only)")
    for r in rows:  # 80 columns: the figures on one line, the device on the next
        x_cpu = f"{format_ratio(r.rate / cpu_rate):>9} cpu" if cpu_rate else ""
        print(f"{r.backend:<8} {format_rate(r.rate):>12} {format_ratio(r.rate / ref_rate):>10} ref {x_cpu}  "
              f"hits {r.total}")
        print(f"         {r.device}")
    print("all backends found the same hits" if not bad else f"MISMATCH: {', '.join(bad)}")
    from miner.bench.engine import busy_notes
    for note in busy_notes([(r.backend, r.others_busy) for r in rows]):
        print(note)
