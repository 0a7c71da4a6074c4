"""One chain file has one writer whatever it is called, and no file the node creates beside it can
be turned against another file by whoever can write to the folder.

Each test here failed before the change it guards: a hard link let `miner mine` write a file a
node owned (SQLite keeps a journal per name: what one committed vanished under the other), a
symlink gave each side its own lock and journal, the lock file and the cookie's temporary file
were opened through planted links, and `--rpc-cookie-file` could name the chain itself.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.nodeproc import ROOT, NodeProcess, make_chain, stored_blocks

from miner.chain.chain import Chain
from miner.chain.lock import ChainLock
from miner.errors import ChainError, InvalidInput
from miner.node.rpc.auth import write_cookie

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def miner(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "miner", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("miner: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_a_second_name_of_a_node_owned_chain_cannot_be_mined(tmp_path):
    chain = make_chain(tmp_path / "chain.sqlite")
    link = tmp_path / "other-name.sqlite"
    with NodeProcess(chain) as node:
        assert len(node.call("generatetoaddress", 5, ADDRESS)) == 5
        os.link(chain, link)
        proc = miner("mine", "--backend", "ref", "--blocks", "3", "--chain", str(link), "--quiet")
        assert proc.returncode == 1 and "2 names (hard links)" in error_line(proc)
        assert len(node.call("generatetoaddress", 2, ADDRESS)) == 2
        assert node.call("getblockcount") == 7
    link.unlink()
    assert len(stored_blocks(chain)) == 8  # genesis and the node's seven: nothing lost
    with Chain.open(chain, readonly=True) as c:
        assert c.verify() == 7


def test_a_hard_link_is_refused_to_any_writer_and_fine_to_read(tmp_path):
    chain = make_chain(tmp_path / "chain.sqlite")
    link = tmp_path / "link.sqlite"
    os.link(chain, link)
    with pytest.raises(ChainError, match="2 names"):
        Chain.open(link)
    with pytest.raises(ChainError, match="2 names"):
        Chain.open(chain)
    with Chain.open(link, readonly=True) as c:
        assert c.verify() == 0
    proc = miner("node", "--chain", str(chain), "--rpc-port", "0")
    assert proc.returncode == 1 and "hard links" in error_line(proc)


def test_a_creation_killed_between_link_and_cleanup_does_not_count_as_a_second_name(tmp_path):
    chain = make_chain(tmp_path / "chain.sqlite")
    leftover = tmp_path / f".{chain.name}.creating-4242-1"
    os.link(chain, leftover)  # what a kill right after os.link in Chain.create leaves
    with Chain.open(chain) as c:
        assert c.height == 0
    assert not leftover.exists() and chain.stat().st_nlink == 1


def test_a_symlink_shares_the_real_files_lock_and_journal(tmp_path):
    chain = make_chain(tmp_path / "chain.sqlite")
    alias = tmp_path / "alias.sqlite"
    alias.symlink_to(chain.name)
    with NodeProcess(alias) as node:
        assert len(node.call("generatetoaddress", 3, ADDRESS)) == 3
        proc = miner("mine", "--backend", "ref", "--blocks", "1", "--chain", str(chain), "--quiet")
        assert proc.returncode == 2 and f"--url {node.url}" in error_line(proc)
        assert (tmp_path / "chain.sqlite-wal").exists() and not (tmp_path / "alias.sqlite-wal").exists()
    with NodeProcess(chain) as node:
        assert node.call("getblockcount") == 3  # the blocks stored through the link are there
        proc = miner("mine", "--backend", "ref", "--blocks", "1", "--chain", str(alias), "--quiet")
        assert proc.returncode == 2 and "served by a miner node" in error_line(proc)
    assert not (tmp_path / "alias.sqlite.lock").exists()


def test_the_lock_file_is_never_opened_through_a_link(tmp_path):
    chain = make_chain(tmp_path / "chain.sqlite")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock = tmp_path / "chain.sqlite.lock"
    lock.symlink_to(victim)
    with pytest.raises(InvalidInput, match="symbolic link"):
        ChainLock(chain, exclusive=True).acquire()
    lock.unlink()
    os.link(victim, lock)  # a planted second name of another file
    with pytest.raises(InvalidInput, match="not a plain file of its own"):
        ChainLock(chain, exclusive=True).acquire()
    assert victim.read_text() == "precious"


def test_the_cookie_is_written_only_to_a_file_of_its_own_from_the_first_byte(tmp_path):
    cookie = tmp_path / ".cookie"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = tmp_path / f".{cookie.name}.tmp-{os.getpid()}"
    planted.symlink_to(victim)
    old_umask = os.umask(0)  # a permissive umask must not widen the cookie's mode
    try:
        pair = write_cookie(cookie)
    finally:
        os.umask(old_umask)
    assert victim.read_text() == "precious" and not planted.exists()
    assert cookie.read_text() == pair and not cookie.is_symlink()
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o600
    cookie.unlink()
    cookie.symlink_to(victim)  # a link at the cookie's own name is replaced, not followed
    pair = write_cookie(cookie)
    assert victim.read_text() == "precious" and cookie.read_text() == pair and not cookie.is_symlink()


@pytest.mark.parametrize("name", ["chain.sqlite", "chain.sqlite-wal", "chain.sqlite-shm", "chain.sqlite.lock",
                                  "hardlink", "symlink"])
def test_the_cookie_may_not_be_the_chain_or_its_files(tmp_path, name):
    chain = make_chain(tmp_path / "chain.sqlite")
    with Chain.open(chain) as c:
        before = [c.tip_hash]
    if name == "hardlink":
        os.link(chain, tmp_path / name)
    elif name == "symlink":
        (tmp_path / name).symlink_to(chain)
    # Refused at once; a node that starts instead is killed by the timeout and the test fails.
    proc = miner("node", "--chain", str(chain), "--rpc-port", "0", "--rpc-cookie-file", str(tmp_path / name),
                 timeout=30)
    assert proc.returncode == 2 and "--rpc-cookie-file" in error_line(proc)
    if name == "hardlink":
        (tmp_path / name).unlink()
    with Chain.open(chain) as c:
        assert [c.tip_hash] == before and c.verify() == 0


def test_the_real_path_of_a_chain_gets_one_lock(tmp_path):
    chain = make_chain(tmp_path / "chain.sqlite")
    (tmp_path / "sub").mkdir()
    alias = tmp_path / "sub" / "alias.sqlite"
    alias.symlink_to(Path("..") / chain.name)
    with ChainLock(alias, exclusive=True), pytest.raises(InvalidInput, match="in use by another process"):
        ChainLock(chain, exclusive=True).acquire()


def test_the_command_a_refused_miner_prints_works_as_printed(tmp_path):
    """The hint gives the node's URL and its cookie; and, as bitcoin-cli finds its data
    folder's cookie, `--url` alone finds the one beside the chain file."""
    import shlex
    chain = make_chain(tmp_path / "chain.sqlite")
    with NodeProcess(chain) as node:
        proc = miner("mine", "--backend", "ref", "--chain", str(chain), "--quiet")
        line = error_line(proc)
        assert proc.returncode == 2 and "mine it through the node: miner mine --url" in line
        printed = shlex.split(line.split("mine it through the node: ", 1)[1])
        assert printed[:2] == ["miner", "mine"] and "--rpc-cookie-file" in printed
        ran = miner(*printed[1:], "--backend", "ref", "--blocks", "1", "--quiet")
        assert ran.returncode == 0, ran.stderr
        found = miner("mine", "--url", node.url, "--chain", str(chain), "--backend", "ref", "--blocks", "1", "--quiet")
        assert found.returncode == 0, found.stderr
        assert node.call("getblockcount") == 2


def test_url_alone_finds_the_cookie_of_a_node_in_this_folder_and_says_where_it_looked(tmp_path):
    """With $MINER_CHAIN naming a chain elsewhere, `mine --url` still finds the cookie of the node
    whose chain is this folder's default (miner-chain.sqlite); with no cookie in either place the
    one error line names both places it looked."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    env = {**os.environ, "MINER_CHAIN": str(elsewhere / "other.sqlite")}

    def mine_url(url: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "miner", "mine", "--url", url, "--backend", "ref",
                               "--blocks", "1", "--quiet"], cwd=here, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    proc = mine_url("http://127.0.0.1:1")
    line = error_line(proc)
    assert proc.returncode == 2, proc.stderr
    assert (f"no cookie at {elsewhere.resolve() / 'other.sqlite.cookie'} or "
            f"{here.resolve() / 'miner-chain.sqlite.cookie'}") in line
    with NodeProcess(make_chain(here / "miner-chain.sqlite")) as node:
        assert node.cookie == here.resolve() / "miner-chain.sqlite.cookie"
        found = mine_url(node.url)
        assert found.returncode == 0, found.stderr
        assert node.call("getblockcount") == 1


def test_two_nodes_in_one_folder_each_have_their_own_cookie_and_a_failed_start_leaves_nothing(tmp_path):
    """Two chains in one folder, a node on each: each writes its own cookie (NAME.cookie beside
    the chain NAME), which `mine --url --chain NAME` reads (tests above). Both shared `./.cookie`:
    the second node overwrote the first one's (401 for the first node's miners). A third node
    whose port is taken fails with one line and leaves no chain, lock or cookie behind, and the
    cookie of the node on that port stays as it was: it used to remove it, and its new chain
    stayed. The same holds when told to write that very cookie (`--rpc-cookie-file`)."""
    a, b = make_chain(tmp_path / "a.sqlite"), make_chain(tmp_path / "b.sqlite")
    with NodeProcess(a) as node_a, NodeProcess(b) as node_b:
        assert node_a.ready["cookie"] == str(tmp_path.resolve() / "a.sqlite.cookie")
        assert node_b.ready["cookie"] == str(tmp_path.resolve() / "b.sqlite.cookie")
        assert node_a.cookie.read_text() != node_b.cookie.read_text()
        assert node_a.call("getblockcount") == 0 == node_b.call("getblockcount")  # 401 for one of them before
        assert len(node_a.call("generatetoaddress", 1, ADDRESS)) == 1

        cookie_a = node_a.cookie.read_text()
        new = tmp_path / "c.sqlite"
        for extra in ((), ("--rpc-cookie-file", str(node_a.cookie))):
            failed = miner("node", "--chain", str(new), "--rpc-port", str(node_a.port), "--backend", "ref",
                           *extra, timeout=30)
            assert failed.returncode == 1 and "cannot listen" in error_line(failed)
            assert [p.name for p in tmp_path.iterdir() if "c.sqlite" in p.name] == []
            assert sorted(p.name for p in tmp_path.iterdir() if "cookie" in p.name) == [
                "a.sqlite.cookie", "b.sqlite.cookie"]
            assert node_a.cookie.read_text() == cookie_a and node_a.call("getblockcount") == 1
        assert node_b.stop() == 0
        assert not node_b.cookie.exists() and node_a.cookie.read_text() == cookie_a
        assert node_a.call("getblockcount") == 1


def test_a_start_that_fails_at_its_last_face_closes_those_opened_before_and_leaves_nothing(tmp_path):
    """The node opens its faces one after another (RPC, Stratum, peers, metrics), each release
    taken on one exit stack: when the last cannot listen, the faces opened before it are closed
    and the new chain, its lock and the cookie are gone, so the same chain starts at once after."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    new = tmp_path / "c.sqlite"
    try:
        failed = miner("node", "--chain", str(new), "--rpc-port", "0", "--stratum-port", "0", "--listen", "0",
                       "--metrics-port", str(port), "--backend", "ref", timeout=60)
    finally:
        taken.close()
    assert failed.returncode == 1 and f"cannot listen for metrics on 127.0.0.1:{port}" in error_line(failed)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with NodeProcess(make_chain(new)) as node:
        assert node.call("getblockcount") == 0


def test_a_chain_name_too_long_for_its_cookie_beside_it_is_said_before_anything_starts(tmp_path):
    """A chain's name may take 250 bytes (its `.lock` adds 5), but the temporary file of its
    cookie, `.NAME.cookie.tmp-PID`, does not fit beside a name of 240: the node says so in one
    line before it opens anything, instead of failing once it serves."""
    chain = make_chain(tmp_path / "c.sqlite").rename(tmp_path / ("c" * 240))
    before = stored_blocks(chain)
    proc = miner("node", "--chain", str(chain), "--rpc-port", "0", timeout=30)
    assert proc.returncode == 2 and "give a shorter --rpc-cookie-file" in error_line(proc)
    assert not any("cookie" in p.name for p in tmp_path.iterdir()) and stored_blocks(chain) == before
