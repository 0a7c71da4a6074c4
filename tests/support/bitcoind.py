"""A real Bitcoin Core `bitcoind -regtest` for the tests, when one is installed.

Found through $BITCOIND or `bitcoind` on PATH; the tests that need it are skipped otherwise, with
that reason. It runs on 127.0.0.1 only, with fresh ports, a data directory of the test's own and no
peers, and is stopped (then killed if it hangs) when the test ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from miner.errors import MinerError
from miner.mining.rpc_client import RpcCallError, RpcClient


def bitcoind_path() -> str | None:
    return os.environ.get("BITCOIND") or shutil.which("bitcoind")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bitcoind:
    def __init__(self, binary: str, datadir: Path, listen: bool = False):
        """`listen`: accept peers on 127.0.0.1 (`p2p_port`); it still makes no connection of its
        own (-connect=0) but those asked for with `addnode`."""
        datadir.mkdir(parents=True, exist_ok=True)
        self.datadir = datadir
        self.rpc_port = _free_port()
        self.p2p_port = _free_port()
        network = ([f"-bind=127.0.0.1:{self.p2p_port}", "-listen=1", "-discover=0", "-listenonion=0",
                    "-fixedseeds=0"] if listen else ["-listen=0", f"-port={self.p2p_port}"])
        self.cookie = datadir / "regtest" / ".cookie"
        self.url = f"http://127.0.0.1:{self.rpc_port}"
        self.proc = subprocess.Popen(
            [binary, "-regtest", f"-datadir={datadir}", "-server", *network, "-connect=0",
             "-dnsseed=0", "-disablewallet", f"-rpcport={self.rpc_port}", "-rpcbind=127.0.0.1",
             "-rpcallowip=127.0.0.1", "-printtoconsole=0", "-fallbackfee=0.0001"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.rpc: RpcClient | None = None

    def __enter__(self) -> Bitcoind:
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bitcoind exited {self.proc.returncode}: {self.proc.stderr.read()[-2000:]}")
            if self.cookie.exists():
                client = RpcClient(self.url, cookie_file=self.cookie, timeout=30)
                try:
                    client.call("getblockcount")
                    self.rpc = client
                    return
                except RpcCallError as exc:
                    if exc.code != -28:  # -28: still warming up
                        raise
                except MinerError:
                    pass  # the RPC server is not listening yet
            time.sleep(0.1)
        raise RuntimeError("bitcoind did not answer RPC within 60 s")

    def call(self, method: str, *params):
        assert self.rpc is not None
        return self.rpc.call(method, *params)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.rpc is not None:
                    self.rpc.call("stop")
                self.proc.wait(timeout=30)
            except (MinerError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
