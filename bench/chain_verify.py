"""Chain verification speed: `miner chain verify` on a long chain, timed end to end.

    python -m miner.bench.chain_verify [--blocks 100000] [--runs 3] [--chain PATH] [--json]
                                       [--baseline DIR]

The chain is real: every block is mined with hashlib at the regtest target (about two hashes a
block) and stored through `Chain.append`, so it holds exactly what `miner mine` would write, with
the same validation on the way in. Each timed run is a fresh `miner chain verify` subprocess, so
the figure includes interpreter start-up, opening the file and loading the index, as a user
sees it. A chain path given with `--chain` is built once and reused by later runs.

`--baseline DIR` times another version of the package too (a checkout of an earlier revision,
such as `git worktree add DIR REV`, run with DIR first on PYTHONPATH), alternating with this one
run by run on the same file, so a before/after comparison comes from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from miner.chain.chain import Chain
from miner.chain.verify import CHECK_BLOCKS
from miner.consensus.params import preset
from miner.mining.sources.local import LocalChainSource
from miner.mining.work import Solution

GENESIS_TIME = 1_700_000_000


def build_easy_chain(path: str | os.PathLike, blocks: int, preset_name: str = "regtest",
                     spacing: int = 1, genesis_time: int = GENESIS_TIME) -> Chain:
    """Mine `blocks` blocks with hashlib on a simulated clock that ticks `spacing` s per block.

    Meant for presets whose target stays easy (regtest: half of all nonces are hits); the nonce
    search is a plain host loop through `KernelWork.check`, the same re-check every backend's
    candidates pass.
    """
    chain = Chain.create(path, preset(preset_name, genesis_time))
    clock = [genesis_time]
    source = LocalChainSource(chain, clock=lambda: clock[0])
    for _ in range(blocks):
        clock[0] += spacing
        job = source.job()
        work = job.work(0)
        nonce = 0
        while not work.check(nonce):
            nonce += 1
        source.append(Solution(job, 0, nonce))
    return chain


# Opening as `miner mine` does, timed inside the process; the import works for the package as it
# is and for releases from before the chain became a package (`miner.chain.Chain`).
_OPEN = """
import sys, time
try:
    from miner.chain.chain import Chain
except ImportError:
    from miner.chain import Chain
t0 = time.perf_counter()
Chain.open(sys.argv[1]).close()
print(time.perf_counter() - t0)
"""


def _env(source: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    return env


def _run(cmd: list[str], source: Path | None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=_env(source))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:4])} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def time_cli_verify(path: Path, source: Path | None = None) -> float:
    """Wall seconds of one `miner chain verify` process (of the package at `source`, or this one);
    it must exit 0."""
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "miner", "chain", "verify", "--chain", str(path)], source)
    return time.perf_counter() - t0


def time_writer_open(path: Path, source: Path | None = None) -> float:
    """Seconds to open the chain as `miner mine` does, start-up check included."""
    return float(_run([sys.executable, "-c", _OPEN, str(path)], source).stdout)


def _summary(seconds: list[float]) -> dict:
    return {"runs": seconds, "median": statistics.median(seconds), "min": min(seconds), "max": max(seconds)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m miner.bench.chain_verify", description=__doc__.split("\n")[0])
    p.add_argument("--blocks", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--chain", default=None, help="chain file to build (if absent) and verify")
    p.add_argument("--baseline", default=None, help="another version's source folder, timed alternately")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.blocks < 1 or args.runs < 1:
        p.error("--blocks and --runs must be positive")
    baseline = Path(args.baseline).resolve() if args.baseline else None
    if baseline is not None and not (baseline / "miner" / "__init__.py").is_file():
        p.error(f"--baseline {args.baseline}: no miner package there")
    versions = {"this": None} if baseline is None else {"baseline": baseline, "this": None}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.chain) if args.chain else Path(tmp) / "verify-bench.sqlite"
        build_seconds = None
        if not path.exists():
            t0 = time.perf_counter()
            build_easy_chain(path, args.blocks).close()
            build_seconds = time.perf_counter() - t0
        with Chain.open(path, readonly=True) as chain:
            height = chain.height
        verify: dict[str, list[float]] = {name: [] for name in versions}
        opens: dict[str, list[float]] = {name: [] for name in versions}
        for _ in range(args.runs):  # alternating, so a change in the machine's load hits both
            for name, source in versions.items():
                verify[name].append(time_cli_verify(path, source))
                opens[name].append(time_writer_open(path, source))
    report = {"blocks": height, "build_seconds": build_seconds,
              **{name: {"verify": _summary(verify[name]), "writer_open": _summary(opens[name])}
                 for name in versions}}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    built = f" (built in {build_seconds:.1f} s)" if build_seconds is not None else ""
    print(f"{height:,} blocks{built}; medians of {args.runs} runs"
          + (", alternating with the baseline" if baseline else ""))
    for name, source in versions.items():
        v, o = report[name]["verify"], report[name]["writer_open"]
        label = f"{name} ({source})" if source else name
        print(f"  {label}: miner chain verify {v['median']:.2f} s (min {v['min']:.2f}, max {v['max']:.2f}), "
              f"{height / v['median']:,.0f} blocks/s; opening to mine (index, links, genesis, last "
              f"{CHECK_BLOCKS:,} blocks in full) {o['median']:.3f} s (min {o['min']:.3f}, max {o['max']:.3f})")
    if baseline is not None:
        print(f"  verify {report['baseline']['verify']['median'] / report['this']['verify']['median']:.2f}x, "
              f"opening {report['baseline']['writer_open']['median'] / report['this']['writer_open']['median']:.2f}x "
              f"faster than the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
