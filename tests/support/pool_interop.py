"""Our client (`miner mine --url stratum+tcp://...`) at a pool nobody here wrote, fed by Bitcoin Core
on regtest: ckpool or public-pool. Run by tests/test_real_pools.py inside `unshare -n` (a network
namespace of the test's own, where only loopback exists: public-pool listens on every interface),
or by hand to record a session for tests/fixtures:

    cd tests && unshare -n python -m support.pool_interop ckpool|public-pool OUT.json [--seconds 600] [--shares 1]

Starts bitcoind (regtest, 101 blocks to a bech32 address), the pool, a line recorder in front of
it, then our miner until it has the shares asked for (or the time is up); writes what every part
said: the miner's JSON events, the lines it exchanged with the pool, and which of the blocks it
was told were taken are on Core's active chain. Every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import ROOT
from .bitcoind import Bitcoind
from .line_recorder import LineRecorder

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def _free_port(below: int = 65536) -> int:
    for port in range(3300, below) if below < 65536 else [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port")


def _wait_listening(port: int, proc: subprocess.Popen, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the pool exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the pool did not listen on {port} within {within:.0f} s")


def start_ckpool(core: Bitcoind, work: Path) -> tuple[subprocess.Popen, int]:
    user, password = core.cookie.read_text().strip().split(":", 1)
    port = _free_port(below=4000)  # ckpool treats a port above 4000 as a high-difficulty server
    conf = {"btcd": [{"url": f"127.0.0.1:{core.rpc_port}", "auth": user, "pass": password, "notify": False}],
            "btcaddress": ADDRESS, "btcsig": "/pow-miner interop/", "blockpoll": 100, "nonce1length": 4,
            "nonce2length": 8, "update_interval": 30, "version_mask": "1fffe000",
            "serverurl": [f"127.0.0.1:{port}"], "mindiff": 1, "startdiff": 1, "maxdiff": 0,
            "logdir": str(work / "logs")}
    (work / "ckpool.conf").write_text(json.dumps(conf))
    proc = subprocess.Popen([os.environ["CKPOOL"], "-c", str(work / "ckpool.conf"), "-s", str(work / "sock"),
                             "-n", "interopck", "-l", "6"], stdout=open(work / "pool.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port


def start_public_pool(core: Bitcoind, work: Path) -> tuple[subprocess.Popen, int]:
    user, password = core.cookie.read_text().strip().split(":", 1)
    port = _free_port()
    (work / "DB").mkdir()
    (work / ".env").write_text(
        f"BITCOIN_RPC_URL=http://127.0.0.1\nBITCOIN_RPC_USER={user}\nBITCOIN_RPC_PASSWORD={password}\n"
        f"BITCOIN_RPC_PORT={core.rpc_port}\nBITCOIN_RPC_TIMEOUT=10000\nAPI_PORT={_free_port()}\n"
        f"STRATUM_PORT={port}\nNETWORK=regtest\nAPI_SECURE=false\nPOOL_IDENTIFIER=\"Public-Pool\"\n")
    main = Path(os.environ["PUBLIC_POOL"]) / "dist" / "main.js"
    proc = subprocess.Popen([os.environ.get("NODE", "node"), str(main)], cwd=work,
                            stdout=open(work / "pool.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port


def run(pool: str, seconds: float, shares: int, suggest: str | None) -> dict:
    if os.environ.get("INTEROP_NETNS") == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with tempfile.TemporaryDirectory(prefix=f"interop-{pool}-") as tmp:
        work = Path(tmp)
        with Bitcoind(os.environ["BITCOIND"], work / "core") as core:
            core.call("generatetoaddress", 101, ADDRESS)
            height = core.call("getblockcount")
            proc, port = (start_ckpool if pool == "ckpool" else start_public_pool)(core, work)
            recorder = None
            miner = None
            try:
                _wait_listening(port, proc)
                recorder = LineRecorder(port)
                worker = "interop.rig1" if pool == "ckpool" else f"{ADDRESS}.rig1"
                cmd = [sys.executable, "-m", "miner", "mine", "--url",
                       f"stratum+tcp://{worker}:x@127.0.0.1:{recorder.port}", "--shares", str(shares),
                       "--json", "--retries", "3", "--pool-stall", "0"]
                if suggest:
                    cmd += ["--suggest-difficulty", suggest]
                miner = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, start_new_session=True)
                try:
                    out, err = miner.communicate(timeout=seconds)
                except subprocess.TimeoutExpired:
                    os.killpg(miner.pid, signal.SIGINT)  # the summary is still printed
                    out, err = miner.communicate(timeout=60)
                time.sleep(2)  # the pool's own submitblock of the last share reaches Core
                events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
                taken = [e["hash_hex"] for e in events if e.get("event") == "block" and e.get("verdict") == "accepted"]
                active = [h for h in taken if _on_active_chain(core, h)]
                return {"pool": pool, "returncode": miner.returncode, "stderr": err[-4000:], "events": events,
                        "lines": recorder.lines, "core_height_before": height,
                        "core_height_after": core.call("getblockcount"), "blocks_taken": taken,
                        "blocks_on_core": active, "pool_log": (work / "pool.log").read_text()[-6000:]}
            finally:
                if miner is not None and miner.poll() is None:
                    os.killpg(miner.pid, signal.SIGKILL)
                if recorder is not None:
                    recorder.close()
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _on_active_chain(core: Bitcoind, block_hash: str) -> bool:
    try:
        return core.call("getblockheader", block_hash)["confirmations"] > 0
    except Exception:  # not known to Core at all
        return False


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("pool", choices=("ckpool", "public-pool"))
    p.add_argument("out")
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--shares", type=int, default=1)
    p.add_argument("--suggest-difficulty", default=None)
    args = p.parse_args()
    report = run(args.pool, args.seconds, args.shares, args.suggest_difficulty)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
