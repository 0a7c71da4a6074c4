"""Small leaks and leftovers (issue 21, item 11): a node whose reader went away keeps serving, and
what a process killed mid-way leaves beside a chain or a cookie is cleared by the next start.
Each test failed before the change it guards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from base64 import b64encode

from nodeproc import ROOT, make_chain

from miner.chain.chain import Chain
from miner.node.rpc.auth import write_cookie

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _call(url: str, cookie: str, method: str, *params):
    req = urllib.request.Request(url + "/", data=json.dumps({"method": method, "params": list(params),
                                                             "id": 1}).encode(),
                                 headers={"Authorization": "Basic " + b64encode(cookie.encode()).decode()})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())["result"]


def test_a_node_whose_output_reader_left_keeps_serving(tmp_path):
    """`miner node | head -1`: the pipe closes after the first line, and every event line after
    it used to end the node by SIGPIPE."""
    chain = make_chain(tmp_path / "chain.sqlite")
    proc = subprocess.Popen([sys.executable, "-m", "miner", "node", "--chain", str(chain), "--rpc-port", "0",
                             "--backend", "ref", "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        ready = json.loads(proc.stdout.readline())
        proc.stdout.close()  # what `head -1` does
        cookie = (tmp_path / ".cookie").read_text()
        assert len(_call(ready["url"], cookie, "generatetoaddress", 3, ADDRESS)) == 3  # three lines to nobody
        assert _call(ready["url"], cookie, "getblockcount") == 3
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    with Chain.open(chain, readonly=True) as c:
        assert c.verify() == 3


def test_a_killed_creations_leftovers_are_cleared_by_the_next_start(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    names = [f".chain.sqlite.creating-{dead}-123{suffix}" for suffix in ("", "-wal", "-shm", "-journal")]
    for name in names:
        (tmp_path / name).write_bytes(b"half a chain")
    kept = tmp_path / f".chain.sqlite.creating-{live}-456"  # a creation still under way
    kept.write_bytes(b"in progress")
    make_chain(tmp_path / "chain.sqlite")
    assert not any((tmp_path / name).exists() for name in names) and kept.exists()
    (tmp_path / names[0]).write_bytes(b"killed again")
    with Chain.open(tmp_path / "chain.sqlite"):
        pass  # a writer's open clears them too
    assert not (tmp_path / names[0]).exists() and kept.exists()


def test_a_killed_nodes_cookie_temporary_file_is_cleared(tmp_path):
    cookie = tmp_path / ".cookie"
    stale = tmp_path / f".{cookie.name}.tmp-{_dead_pid()}"  # as write_cookie names it
    stale.write_text("__cookie__:" + "0" * 64)
    pair = write_cookie(cookie)
    assert cookie.read_text() == pair and not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".cookie"]
