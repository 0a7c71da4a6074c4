"""Small leaks and leftovers (issue 21, item 11): a node whose reader went away keeps serving, and
what a process killed mid-way leaves beside a chain or a cookie is cleared by the next start.
Each test failed before the change it guards."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
from support.nodeproc import ROOT, NodeProcess, make_chain

from miner.chain.chain import Chain
from miner.errors import InvalidInput
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
        cookie = Path(ready["cookie"]).read_text()
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


def _raw_long_poll(port: int, cookie: str, longpollid: str) -> socket.socket:
    body = json.dumps({"method": "getblocktemplate", "params": [{"rules": ["segwit"], "longpollid": longpollid}],
                       "id": 1}).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + b64encode(cookie.encode())
              + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def _waiting_polls(node: NodeProcess) -> int:
    return sum(c["method"] == "getblocktemplate" for c in node.call("getrpcinfo")["active_commands"])


def test_long_polls_whose_clients_left_are_released(tmp_path):
    with NodeProcess(make_chain(tmp_path / "chain.sqlite")) as node:
        lpid = node.call("getblocktemplate", {"rules": ["segwit"]})["longpollid"]
        cookie = node.cookie.read_text()
        socks = [_raw_long_poll(node.port, cookie, lpid) for _ in range(20)]
        deadline = time.monotonic() + 30
        while _waiting_polls(node) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _waiting_polls(node) == 20
        for s in socks:
            s.close()
        while _waiting_polls(node) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _waiting_polls(node) == 0  # before: all 20 waited for the next tip
        assert node.call("getblockcount") == 0


def test_shutdown_does_not_wait_long_for_a_stalled_upload(tmp_path):
    node = NodeProcess(make_chain(tmp_path / "chain.sqlite"))
    s = socket.create_connection(("127.0.0.1", node.port))
    try:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
                  + b64encode(node.cookie.read_text().encode()) + b"\r\nContent-Length: 1000000\r\n\r\n{\"method")
        time.sleep(0.5)  # the upload is in the handler now, and stalls
        t0 = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(20) == 0  # before: aiohttp's 60 s for unfinished requests
        assert time.monotonic() - t0 < 15
    finally:
        s.close()
        node.stop()


def _mine_with_a_bad_backend(chain) -> subprocess.CompletedProcess:
    """A start that takes the chain's lock and then fails before the chain is made."""
    return subprocess.run([sys.executable, "-m", "miner", "mine", "--chain", str(chain), "--backend", "nosuch",
                           "--blocks", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_a_lock_whose_chain_was_never_made_is_removed(tmp_path):
    chain = tmp_path / "new.sqlite"
    failed = _mine_with_a_bad_backend(chain)
    assert failed.returncode == 2 and "nosuch" in failed.stderr
    assert list(tmp_path.iterdir()) == []  # neither a chain nor its lock
    (tmp_path / "new.sqlite.lock").write_bytes(b"")  # as a creation killed after taking it leaves it
    assert _mine_with_a_bad_backend(chain).returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_a_lock_another_process_holds_is_never_removed(tmp_path):
    from miner.chain.lock import ChainLock
    chain = tmp_path / "new.sqlite"
    with ChainLock(chain, exclusive=False) as held:  # a miner whose creation is under way
        assert _mine_with_a_bad_backend(chain).returncode == 2
        assert held.path.exists()
        with pytest.raises(InvalidInput, match="in use by another process"):
            ChainLock(chain, exclusive=True).acquire()  # the same lock file, still held
    assert not held.path.exists()  # the last one out removed it


def test_no_lock_is_left_beside_a_chain_or_a_file_given_by_mistake(tmp_path):
    """`miner mine --chain README.md` used to leave README.md.lock in a checkout; a finished run
    left NAME.lock beside every chain."""
    not_a_chain = tmp_path / "README.md"
    not_a_chain.write_text("# a readme\n")
    proc = subprocess.run([sys.executable, "-m", "miner", "mine", "--chain", str(not_a_chain), "--blocks", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0 and "not a miner chain file" in proc.stderr
    chain = tmp_path / "c.sqlite"
    proc = subprocess.run([sys.executable, "-m", "miner", "mine", "--chain", str(chain), "--preset", "regtest",
                           "--backend", "ref", "--blocks", "1", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "c.sqlite"]


_READ_COMMANDS = (("info",), ("info", "--json"), ("verify",), ("tips",), ("show", "1"), ("plot", "OUT"))


def _folder(path: Path) -> dict[str, bytes]:
    """Every file in the folder with its content: what 'left exactly as it was' compares."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _read_chain(chain: Path, command: tuple[str, ...], out: Path) -> subprocess.CompletedProcess:
    args = [str(out / "plot.png") if a == "OUT" else a for a in command]
    return subprocess.run([sys.executable, "-m", "miner", "chain", *args, "--chain", str(chain)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_read_only_chain_commands_leave_the_folder_as_it_was(tmp_path):
    """No NAME-wal / NAME-shm left beside the chain by info, verify, tips, show or plot (before:
    both were left by every one of them), and the chain file is not changed by a byte."""
    folder, out = tmp_path / "chains", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    chain = make_chain(folder / "chain.sqlite")
    with NodeProcess(chain) as node:
        assert len(node.call("generatetoaddress", 3, ADDRESS)) == 3
    before = _folder(folder)
    assert list(before) == ["chain.sqlite"]
    for command in _READ_COMMANDS:
        proc = _read_chain(chain, command, out)
        assert proc.returncode == 0, (command, proc.stderr)
        assert _folder(folder) == before, command
    # through a symbolic link, whose journal would sit beside the real file
    link = tmp_path / "link.sqlite"
    link.symlink_to(chain)
    assert _read_chain(link, ("info",), out).returncode == 0
    assert _folder(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["chains", "link.sqlite",
                                                                                        "out"]


def test_read_only_chain_commands_work_beside_a_live_node_and_leave_its_files(tmp_path):
    """While a node writes the chain, every read works and sees its blocks; the node's own journal
    is left to it (removing it under a live writer would lose blocks), and it keeps storing."""
    out = tmp_path / "out"
    out.mkdir()
    chain = make_chain(tmp_path / "chain.sqlite")
    with NodeProcess(chain) as node:
        assert len(node.call("generatetoaddress", 2, ADDRESS)) == 2
        names = sorted(p.name for p in tmp_path.iterdir())
        assert "chain.sqlite-wal" in names and "chain.sqlite-shm" in names
        for command in _READ_COMMANDS:
            proc = _read_chain(chain, command, out)
            assert proc.returncode == 0, (command, proc.stderr)
            assert sorted(p.name for p in tmp_path.iterdir()) == names, command
        info = json.loads(_read_chain(chain, ("info", "--json"), out).stdout)
        assert info["height"] == 2
        assert len(node.call("generatetoaddress", 2, ADDRESS)) == 2
        assert node.call("getblockcount") == 4
    assert node.proc.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.sqlite", "out"]
    with Chain.open(chain, readonly=True) as c:
        assert c.height == 4 and c.verify() == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.sqlite", "out"]


def test_a_reader_closing_never_removes_the_journal_of_a_writer_in_the_same_process(tmp_path):
    """The reader opened a quiet file (no journal), then a writer in this very process began; the
    reader's tidy-up must see the writer (SQLite's own last-connection check, which knows this
    process's connections) and leave its journal, or the writer's next blocks would be lost."""
    from support.blockmaker import NOW, grow, params
    path = tmp_path / "tree.sqlite"
    Chain.create(path, params("flat")).close()
    reader = Chain.open(path, readonly=True)
    writer = Chain.open(path)
    grow(writer, writer.tip_hash, 2, 10, b"a")
    reader.close()
    assert (tmp_path / "tree.sqlite-wal").exists()
    grow(writer, writer.tip_hash, 2, 10, b"b")
    writer.close()
    with Chain.open(path, readonly=True) as chain:
        assert chain.height == 4 and chain.verify(now=NOW) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree.sqlite"]
