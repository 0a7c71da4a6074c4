"""Chain verification speed: `miner chain verify` on a long chain, timed end to end.

    python -m miner.bench.chain_verify [--blocks 100000] [--runs 3] [--chain PATH] [--json]

The chain is real: every block is mined with hashlib at the regtest target (about two hashes a
block) and stored through `Chain.append`, so it holds exactly what `miner mine` would write, with
the same validation on the way in. Each timed run is a fresh `miner chain verify` subprocess, so
the figure includes interpreter start-up, opening the file and loading the index, as a user
sees it. A chain path given with `--chain` is built once and reused by later runs.
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


def time_cli_verify(path: Path, runs: int) -> list[float]:
    """Wall seconds of `runs` separate `miner chain verify` processes; each must exit 0."""
    seconds = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "miner", "chain", "verify", "--chain", str(path)],
                              check=False, capture_output=True, text=True)
        seconds.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"miner chain verify failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return seconds


def time_writer_open(path: Path, runs: int) -> list[float]:
    """Seconds to open the chain as `miner mine` does, start-up check included."""
    seconds = []
    for _ in range(runs):
        t0 = time.perf_counter()
        Chain.open(path).close()
        seconds.append(time.perf_counter() - t0)
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m miner.bench.chain_verify", description=__doc__.split("\n")[0])
    p.add_argument("--blocks", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--chain", default=None, help="chain file to build (if absent) and verify")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.blocks < 1 or args.runs < 1:
        p.error("--blocks and --runs must be positive")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.chain) if args.chain else Path(tmp) / "verify-bench.sqlite"
        build_seconds = None
        if not path.exists():
            t0 = time.perf_counter()
            build_easy_chain(path, args.blocks).close()
            build_seconds = time.perf_counter() - t0
        with Chain.open(path, readonly=True) as chain:
            height = chain.height
        seconds = time_cli_verify(path, args.runs)
        opens = time_writer_open(path, args.runs)
    median = statistics.median(seconds)
    report = {"blocks": height, "runs": seconds, "median": median, "min": min(seconds),
              "max": max(seconds), "blocks_per_second": height / median,
              "build_seconds": build_seconds, "writer_open_runs": opens,
              "writer_open_median": statistics.median(opens)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        built = f" (built in {build_seconds:.1f} s)" if build_seconds is not None else ""
        print(f"miner chain verify, {height:,} blocks{built}: median {median:.2f} s of {args.runs} "
              f"(min {min(seconds):.2f}, max {max(seconds):.2f}), {height / median:,.0f} blocks/s")
        print(f"opening it to mine (index, links, genesis, last {CHECK_BLOCKS:,} blocks in full): median "
              f"{statistics.median(opens):.3f} s of {args.runs} (min {min(opens):.3f}, max {max(opens):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
