"""How soon a newcomer's first `miner mine` finds its first block: empty caches, a fresh chain.

    python -m miner.bench.first_block [--runs 3] [--busy 2] [--json]

Each run starts `miner mine --json` on a new chain of the default `local` preset with empty
caches (a new XDG_CACHE_HOME, a new NUMBA_CACHE_DIR, no MINER_CACHE): the CPU kernel compiles in
the background while the hashlib stand-in mines. Measured from the `start` event (hashing begins)
to the first `block` event, on this process's clock as the lines arrive; the run is then stopped
(its compile with it). `--busy N` keeps N processes spinning on the CPU beside every run, as two
`yes > /dev/null` would. Reported per run: seconds to the first block and which backend found it,
with the machine's load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPIN = "while True: pass"


def first_block(timeout: float = 300.0) -> dict:
    """One run from empty caches: seconds from hashing's start to the first block."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "MINER_CACHE"}
        env.update(XDG_CACHE_HOME=str(root / "cache"), NUMBA_CACHE_DIR=str(root / "numba"),
                   PYTHONUNBUFFERED="1")
        load = os.getloadavg()[0]
        launched = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "miner", "mine", "--json", "--blocks", "5",
                                 "--chain", str(root / "chain.sqlite")], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
        started = found = None
        backend = ""
        try:
            for line in proc.stdout:
                event = json.loads(line)
                now = time.monotonic()
                if event["event"] == "start":
                    started = now
                elif event["event"] == "block":
                    found, backend = now, event["backend"]
                    break
                if now - launched > timeout:
                    break
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the miner and its compiling child
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if started is None or found is None:
            return {"ok": False, "load": load}
        return {"ok": True, "start_seconds": started - launched, "first_block_seconds": found - started,
                "backend": backend, "load": load}


def run(runs: int = 3, busy: int = 0) -> list[dict]:
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
    try:
        time.sleep(1.0 if busy else 0.0)  # let the spinners take their share first
        return [first_block() for _ in range(runs)]
    finally:
        for s in spinners:
            s.kill()
            s.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miner.bench.first_block", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs, each from empty caches (default 3)")
    parser.add_argument("--busy", type=int, default=0, help="processes spinning beside each run (default 0)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    args = parser.parse_args(argv)
    results = run(args.runs, args.busy)
    if args.json:
        print(json.dumps({"busy": args.busy, "runs": results}, indent=2))
    else:
        for r in results:
            print(f"first block {r['first_block_seconds']:.1f} s after hashing began ({r['backend']}; hashing "
                  f"began {r['start_seconds']:.1f} s after launch; load {r['load']:.1f})" if r["ok"]
                  else f"no block (load {r['load']:.1f})")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
