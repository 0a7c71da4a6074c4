"""Side by side with peer CPU miners: `python -m miner.bench.peers --cpuminer PATH [--pooler PATH]
[--algo sha256d|scrypt]`.

The peers are cpuminer-opt (JayDDee) and pooler's cpuminer (`minerd`), built by the user from
their public source; this project neither ships nor downloads them. Their `--benchmark -a ALGO
-t N` mode hashes a fixed dummy job and prints `Total: X MH/s` (pooler's: `X khash/s`) every
few seconds. The two miners run one after the other, never at
once, alternating for several rounds at each thread count, so slow drifts of a shared machine
(other tenants, clocks) fall on both alike. Each figure is a median: of the peer's reports after
its first (which includes start-up), and of our timed runs on a hard target.

`--without-avx512` re-runs this command with numba compiling for the CPU minus AVX-512
(NUMBA_CPU_FEATURES), which is how to measure a desktop-class path on a server CPU; point
`--cpuminer` at a peer built without AVX-512 too (`-march=native -mno-avx512f`) to compare like
with like.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

_RATE = re.compile(r"Total:\s*([0-9.]+)\s*([kMGT]?)(?:H|hash)/s")
_SCALE = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_peer_rates(text: str) -> list[float]:
    """Every `Total: X MH/s` (or `X khash/s`) report in a peer's output, in hashes/s."""
    return [float(v) * _SCALE[u] for v, u in _RATE.findall(text)]


class TooFewReports(Exception):
    """A peer printed fewer than two rate reports in its run (cpuminer-opt runs at nice 19, and
    on a loaded machine it printed one in 12 s): nothing to take a median of."""


def run_peer(path: str, threads: int, seconds: float, algo: str = "sha256d") -> list[float]:
    """A peer's benchmark for about `seconds`; its reports after the first (TooFewReports when
    it printed fewer than two)."""
    cmd = [path, "--benchmark", "-a", algo, "-t", str(threads)]
    if "minerd" not in os.path.basename(path):
        cmd.append("--no-color")  # cpuminer-opt's; pooler's cpuminer has no such option
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=seconds)
        out = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:  # the normal end: the benchmark runs until killed
        out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
    rates = parse_peer_rates(out)
    if len(rates) < 2:
        raise TooFewReports(f"{path} printed {len(rates)} rate report(s) in {seconds:g} s; "
                            f"give it longer (--seconds) or check that it runs: {out[-300:]!r}")
    return rates[1:]


def run_peer_retrying(path: str, threads: int, seconds: float, algo: str = "sha256d") -> list[float] | None:
    """`run_peer`, run once more when it printed too few rate reports; None when the second run
    did too, and the round is reported as missing for this peer instead of the whole comparison
    ending in a traceback."""
    for attempt in (1, 2):
        try:
            return run_peer(path, threads, seconds, algo)
        except TooFewReports as exc:
            then = "running it once more" if attempt == 1 else "this run is reported as missing"
            print(f"warning: {exc}; {then}", file=sys.stderr, flush=True)
    return None


def run_ours(threads: int, kernel: str, seconds: float, algo: str = "sha256d") -> list[float]:
    from miner.bench.engine import bench_backend

    if algo == "scrypt":
        from miner.backends.cpu_scrypt import CpuScryptBackend
        backend = CpuScryptBackend(threads=threads)
    else:
        from miner.backends.cpu import CpuBackend
        backend = CpuBackend(threads=threads, kernel=kernel)
    try:
        return bench_backend(backend, duration=1.0, runs=max(2, int(seconds)), pow=algo).runs
    finally:
        backend.close()


def compare(peers: dict[str, str], thread_counts: list[int], kernels: list[str], rounds: int,
            seconds: float, algo: str = "sha256d") -> list[dict]:
    """Each round runs every peer, then each of our kernels, one after the other. A row per
    (threads, our kernel) with every peer's median and ours; `ratio` is ours over the faster
    peer's. A peer run that printed too few reports twice (`run_peer_retrying`) is counted in
    `missing` for that peer; a peer with no run left has median None, and with no peer left at
    all, `peer` and `ratio` are None."""
    rows = []
    for threads in thread_counts:
        peer: dict[str, list[float]] = {name: [] for name in peers}
        missing: dict[str, int] = {name: 0 for name in peers}
        ours: dict[str, list[float]] = {k: [] for k in kernels}
        for r in range(rounds):
            for name, path in peers.items():
                print(f"threads={threads} round {r + 1}/{rounds}: {name} ...", file=sys.stderr, flush=True)
                rates = run_peer_retrying(path, threads, seconds, algo)
                if rates is None:
                    missing[name] += 1
                else:
                    peer[name].append(statistics.median(rates))
            for k in kernels:
                print(f"threads={threads} round {r + 1}/{rounds}: ours ({k}) ...", file=sys.stderr, flush=True)
                ours[k].append(statistics.median(run_ours(threads, k, seconds, algo)))
        medians = {name: statistics.median(v) if v else None for name, v in peer.items()}
        present = [m for m in medians.values() if m is not None]
        best = max(present) if present else None
        for k in kernels:
            o = statistics.median(ours[k])
            rows.append({"threads": threads, "kernel": k, "peers": medians, "peer": best, "ours": o,
                         "ratio": o / best if best else None, "peer_rounds": peer, "missing": missing,
                         "our_rounds": ours[k]})
    return rows


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m miner.bench.peers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpuminer", required=True, help="path of a cpuminer-opt binary you built")
    ap.add_argument("--pooler", default=None, help="path of pooler's cpuminer (minerd) you built, also compared")
    ap.add_argument("--algo", default="sha256d", choices=("sha256d", "scrypt"), help="default sha256d")
    ap.add_argument("--threads", default=None, help="thread counts, e.g. 1,2 (default: 1 and all cores)")
    ap.add_argument("--cpu-kernel", default="all", choices=("all", "auto", "simd", "sha"),
                    help="our kernels to run (default: every one this CPU runs)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each run (default 15)")
    ap.add_argument("--without-avx512", action="store_true",
                    help="our side compiled for this CPU without AVX-512 (via NUMBA_CPU_FEATURES)")
    ap.add_argument("--json", action="store_true")
    return ap


def _usage_error(args: argparse.Namespace, peers: dict[str, str]) -> str | None:
    """What is wrong with the arguments, in one line, or None."""
    for name, path in peers.items():
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{name} {path!r} is not an executable file"
    if not (1 <= args.rounds <= 50 and 5 <= args.seconds <= 600):
        return "--rounds must be 1-50 and --seconds 5-600"
    return None


def _print_table(args: argparse.Namespace, names: list[str], kernels: list[str], rows: list[dict],
                 machine: str, masked: bool) -> None:
    print(f"{machine}, {time.strftime('%Y-%m-%d')}; medians of {args.rounds} alternating rounds of "
          f"{args.seconds:g} s" + ("; ours compiled without AVX-512" if masked else ""))
    unit, scale = ("kH/s", 1e3) if args.algo == "scrypt" else ("MH/s", 1e6)
    print(f"{args.algo}: {'threads':>7} {'kernel':<6} " + " ".join(f"{n:>14}" for n in names)
          + f" {'ours':>14} {'vs faster':>9}")
    for r in rows:
        print(f"{'':>{len(args.algo) + 1}} {r['threads']:>7} {r['kernel']:<6} "
              + " ".join(f"{r['peers'][n] / scale:>9.2f} {unit}" if r["peers"][n] is not None else f"{'missing':>14}"
                         for n in names)
              + f" {r['ours'] / scale:>9.2f} {unit} "
              + (f"{r['ratio']:>8.2f}x" if r["ratio"] is not None else f"{'-':>9}"))
    for r in rows[::len(kernels) or 1]:
        for name, n in r["missing"].items():
            if n:
                print(f"{name} at {r['threads']} thread(s): {n} of {args.rounds} run(s) missing (too few rate "
                      f"reports twice)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.without_avx512 and "NUMBA_CPU_FEATURES" not in os.environ:
        from miner.kernels.cpu_select import target_cpu, without_avx512
        env = dict(os.environ, NUMBA_CPU_FEATURES=without_avx512(target_cpu()[1]))
        return subprocess.call([sys.executable, "-m", "miner.bench.peers", *(argv or sys.argv[1:])], env=env)
    peers = {"cpuminer-opt": args.cpuminer, **({"cpuminer": args.pooler} if args.pooler else {})}
    from miner.bench.cli_commands import _cpu_kernels, _thread_counts
    from miner.bench.engine import machine_description

    from miner.errors import InvalidInput
    problem, threads, kernels = _usage_error(args, peers), [], []
    if problem is None:
        try:
            threads = _thread_counts(args.threads)
            kernels = _cpu_kernels(args.cpu_kernel) if args.algo == "sha256d" else ["scrypt"]
        except InvalidInput as exc:
            problem = str(exc)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    rows = compare(peers, threads, kernels, args.rounds, args.seconds, args.algo)
    machine = machine_description()
    masked = "NUMBA_CPU_FEATURES" in os.environ
    if args.json:
        print(json.dumps({"machine": machine, "date": time.strftime("%Y-%m-%d"), "algo": args.algo,
                          "numba_features_masked": masked, "rounds": args.rounds,
                          "seconds": args.seconds, "rows": rows}, indent=2))
    else:
        _print_table(args, list(peers), kernels, rows, machine, masked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
