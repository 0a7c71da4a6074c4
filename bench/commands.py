"""The `miner bench` and `miner compare` commands: what they measure and how they print it.

They live beside the engine they drive (`engine.py`, `compare.py`, `sass.py`) rather than in
`miner/cli/main.py`, which only parses arguments and dispatches; installed, this folder is `miner.bench`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from miner.errors import InvalidInput, UsageError
from miner.ui.units import format_rate, rate_unit


def _thread_counts(text: str | None) -> list[int]:
    from miner.backends.cpu import default_threads
    if text is None:
        return sorted({1, default_threads()})
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--threads must be comma-separated whole numbers, got {text!r}") from None
    if not counts or min(counts) < 1 or max(counts) > 1024:
        raise UsageError(f"--threads values must be between 1 and 1024, got {text!r}")
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
    from miner.bench.engine import (
        bench_backend,
        machine_description,
        measure_job_switch,
        static_prediction,
    )

    from miner.backends.registry import make_backends
    items = [x.strip().lower() for x in args.backend.split(",") if x.strip()]
    plan = []  # (backend, setting, prepare): one timed row each
    switch_set = {}  # one backend per name for the job-switch test: the last (largest) setting
    pow = getattr(args, "pow", "sha256d")
    for item in items:
        if pow != "sha256d":  # one kernel per backend; the CPU's at each thread count
            for n in (_thread_counts(args.threads) if item == "cpu" else [None]):
                for backend in make_backends(item, threads=n, pow=pow, lookup_gap=args.lookup_gap):
                    plan.append((backend, f"{pow}" + (f" threads={n}" if n else ""), None))
            continue
        if item == "cpu":
            for kernel in _cpu_kernels(args.cpu_kernel):
                for n in _thread_counts(args.threads):
                    backend = make_backends("cpu", threads=n, cpu_kernel=kernel)[0]
                    plan.append((backend, f"kernel={kernel} threads={n}", None))
                    switch_set[backend.name] = backend
            continue
        for backend in make_backends(item):
            switch_set[backend.name] = backend
            if backend.kind != "cuda":
                plan.append((backend, "", None))
                continue
            if shapes is None:  # the autotuned shape (tuned on first use, then cached)
                plan.append((backend, "tuned", None))
            for block, npt in shapes or []:
                plan.append((backend, f"block={block} npt={npt}",
                             lambda b=backend, s=(block, npt): b.set_launch(*s)))
    results = []
    try:
        for backend, setting, prepare in plan:
            if not args.json:
                print(f"measuring {backend.name} {setting} ...", file=sys.stderr, flush=True)
            if prepare:
                prepare()
            result = bench_backend(backend, args.duration, args.runs, setting, pow=pow)
            if backend.kind == "cpu" and getattr(backend, "kernel_preference", None) == "auto":
                result.setting = f"kernel={backend.kernel} (auto) threads={backend.threads}"
            if setting == "tuned":
                result.setting = f"block={backend.block} npt={backend.nonces_per_thread} (tuned)"
            result.predicted = static_prediction(backend)
            results.append(result)
        switch = None
        if args.switches and pow == "sha256d":
            if not args.json:
                print(f"measuring job switches across {', '.join(switch_set)} ...", file=sys.stderr,
                      flush=True)
            switch = measure_job_switch(list(switch_set.values()), args.switches, args.unit_seconds)
    finally:
        for backend in {id(b): b for b, _, _ in plan}.values():
            backend.close()
    machine = machine_description()
    if args.json:
        print(json.dumps({"machine": machine, "date": time.strftime("%Y-%m-%d"), "runs": args.runs,
                          "duration": args.duration,
                          "results": [r.as_dict() for r in results],
                          "job_switch": switch.as_dict() if switch else None}, indent=2))
        return 0
    from rich.console import Console
    console = Console()
    for renderable in bench_report(results, machine, args.runs, args.duration):
        console.print(renderable, highlight=False)
    if switch:
        console.print(f"job switch ({', '.join(switch.backends)}, units of {switch.unit_seconds:g} s): "
                      f"new job on every backend after {switch.median * 1e3:.1f} ms median, "
                      f"{max(switch.samples) * 1e3:.1f} ms max over {len(switch.samples)} switches",
                      highlight=False)
    return 0


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

    from miner.backends.registry import cuda_device_count, make_backends
    from miner.backends.work import KernelWork
    if args.plot:
        from miner.ui.plot import check_output_path
        check_output_path(args.plot)  # before the measurement, not after it
    if not 0 < args.seconds <= 60:
        raise UsageError(f"--seconds must be above 0 and at most 60 seconds, got {args.seconds:g}")
    spec = args.backend
    if spec is None:
        count, why = cuda_device_count()
        spec = "ref,cpu" + (",cuda" if count else "")
        if not count and not args.json:
            print(f"no GPU here ({why}); comparing the CPU backends", file=sys.stderr)
    pow = args.pow
    if args.count is None:
        args.count = 1 << 21 if pow == "sha256d" else 1 << 11  # scrypt is ~5,000x slower a hash
    if pow != "sha256d" and args.backend is None:
        spec = "ref,cpu"
    backends = make_backends(spec, cpu_kernel=args.cpu_kernel, pow=pow, lookup_gap=args.lookup_gap)
    if backends[0].kind != "ref":
        backends = make_backends("ref", pow=pow) + backends
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
    ref_rate = rows[0].rate
    cpu_rate = next((r.rate for r in rows if r.backend.startswith("cpu")), None)
    if args.json:
        print(json.dumps({"count": args.count, "agree": not bad, "mismatches": bad,
                          "speed": {"target": "hard (no hits)", "seconds_per_run": args.seconds,
                                    "runs": args.runs},
                          "rows": [{**r.__dict__, "hits": len(r.hits), "x_ref": r.rate / ref_rate,
                                    "x_cpu": r.rate / cpu_rate if cpu_rate else None} for r in rows]},
                         indent=2))
    else:
        print(f"hits: {args.count:,} nonces of an easy-target job on every backend;\nspeed: median "
              f"of {args.runs} x {args.seconds:g} s on a hard target (kernel fast path only)")
        for r in rows:  # 80 columns: the figures on one line, the device on the next
            x_cpu = f"{r.rate / cpu_rate:8.1f}x cpu" if cpu_rate else ""
            print(f"{r.backend:<8} {format_rate(r.rate):>12} {r.rate / ref_rate:9.1f}x ref {x_cpu}  hits {r.total}")
            print(f"         {r.device}")
        print("all backends found the same hits" if not bad else f"MISMATCH: {', '.join(bad)}")
    if args.plot:
        plot(rows, args.plot, pow=pow)
    return 1 if bad else 0
