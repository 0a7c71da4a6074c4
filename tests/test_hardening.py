"""The chain and the CLI under what users meet: SIGKILL at any moment, tampered files, a wrong
clock, full and read-only disks, other users' files and hostile arguments. Every failure is one
line with a consistent exit code (2: the command line is wrong; 1: the chain file or the machine
is), and nothing stored is changed or lost."""

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from miner.bench.chain_verify import GENESIS_TIME, build_easy_chain

from miner.chain.chain import Chain
from miner.consensus.params import ChainParams, preset

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"


def miner(*args, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "miner", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def one_line_error(proc, code, fragment):
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("miner: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("pristine") / "chain.sqlite"
    build_easy_chain(path, 12).close()
    return path


def copy_of(pristine, tmp_path, name="chain.sqlite") -> Path:
    path = tmp_path / name
    shutil.copy(pristine, path)
    return path


def edit(path: Path, sql: str, *args) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def flip(path: Path, height: int, column: str, pos: int) -> None:
    conn = sqlite3.connect(path)
    blob = bytearray(conn.execute(f"SELECT {column} FROM blocks WHERE height=?", (height,)).fetchone()[0])
    blob[pos] ^= 0x01
    conn.execute(f"UPDATE blocks SET {column}=? WHERE height=?", (bytes(blob), height))
    conn.commit()
    conn.close()


def set_param(path: Path, key: str, value) -> None:
    conn = sqlite3.connect(path)
    params = json.loads(conn.execute("SELECT value FROM meta WHERE key='params'").fetchone()[0])
    params[key] = value
    conn.execute("UPDATE meta SET value=? WHERE key='params'", (json.dumps(params),))
    conn.commit()
    conn.close()


# ---------------------------------------------------------------- 1. never build on a damaged chain

TAMPERS = {
    "tip header byte (time)": lambda p: flip(p, 12, "header", 70),
    "tip header byte (merkle root)": lambda p: flip(p, 12, "header", 40),
    "tip body byte": lambda p: flip(p, 12, "body", 20),
    "older block header byte": lambda p: flip(p, 6, "header", 77),
    "tip hash": lambda p: flip(p, 12, "hash", 0),
    "genesis header byte": lambda p: flip(p, 0, "header", 10),
    "genesis body byte": lambda p: flip(p, 0, "body", 30),
    **{f"parameter {k}": (lambda p, k=k, v=v: set_param(p, k, v)) for k, v in {
        "name": "other", "spacing": 2, "halflife": 3601, "rule": "windowed", "window": 2015,
        "off_by_one": False, "genesis_bits": 0x207FFFFE, "pow_limit_bits": 0x1D00FFFF,
        "genesis_time": GENESIS_TIME + 1, "max_future": 99_999, "message": "edited"}.items()},
    "parameter spacing fractional": lambda p: set_param(p, "spacing", 2.5),
    "parameters not an object": lambda p: edit(p, "UPDATE meta SET value='[]' WHERE key='params'"),
    "body replaced by text": lambda p: edit(p, "UPDATE blocks SET body='not a body' WHERE height=12"),
    "format version": lambda p: edit(p, "UPDATE meta SET value='1' WHERE key='version'"),
}


@pytest.mark.parametrize("what", list(TAMPERS))
def test_mine_refuses_a_tampered_chain_and_changes_nothing(pristine, tmp_path, what):
    path = copy_of(pristine, tmp_path)
    TAMPERS[what](path)
    before = digest(path)
    proc = miner("mine", "--backend", "ref", "--blocks", "1", "--chain", str(path))
    line = one_line_error(proc, 1, str(path))
    assert any(word in line for word in ("block ", "parameters", "genesis")), line
    assert digest(path) == before
    verify = miner("chain", "verify", "--chain", str(path))
    assert verify.returncode == 1 and "Traceback" not in verify.stderr


def test_startup_check_cost_is_small(tmp_path):
    """What a writer re-validates on open: links of every header, genesis against the
    parameters, the last CHECK_BLOCKS blocks in full (docs/guide/chain.md gives the measured cost)."""
    path = tmp_path / "c.sqlite"
    chain = build_easy_chain(path, 40)
    chain.close()
    t0 = time.perf_counter()
    with Chain.open(path) as chain:
        assert chain.height == 40
    assert time.perf_counter() - t0 < 5  # correctness bound, not a benchmark


@pytest.mark.parametrize("fixture,version,committed", [("format1-regtest.sqlite", 1, False),
                                                        ("format2-regtest.sqlite", 2, True),
                                                        ("format3-regtest.sqlite", 3, True)])
def test_files_made_before_the_change_still_validate_and_extend(tmp_path, fixture, version, committed):
    """tests/fixtures/format1-regtest.sqlite and format2-regtest.sqlite were made by earlier
    releases (format 1: genesis does not commit to the parameters; format 2: it does; both one
    block per height). They are read as they are, and a writer upgrades them to the block tree
    in one transaction, every block kept. format3-regtest.sqlite is the block tree as the release
    before the package's restructuring wrote it (20 blocks and a 3-block side branch): it opens,
    verifies and grows as it is, its side branch kept."""
    path = copy_of(FIXTURES / fixture, tmp_path)
    with Chain.open(path, readonly=True) as chain:
        assert chain.format_version == version and chain.params.rule == "asert"
        height = chain.verify()
        before = [chain.block(h).hash for h in range(height + 1)]
        tips = {(t.height, t.hash, t.status) for t in chain.tips()}
    proc = miner("mine", "--backend", "ref", "--blocks", "1", "--chain", str(path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    with Chain.open(path, readonly=True) as chain:
        assert chain.format_version == 3 and chain.genesis_committed is committed
        assert chain.verify() == height + 1
        assert [chain.block(h).hash for h in range(height + 1)] == before
        assert {(t.height, t.hash, t.status) for t in chain.tips() if t.status != "active"} == \
            {t for t in tips if t[2] != "active"}


# ---------------------------------------------------------------- 2. creation is atomic

def _mine_cmd(path):
    return [sys.executable, "-m", "miner", "mine", "--backend", "ref", "--preset", "regtest", "--blocks",
            "1000000", "--chain", str(path), "--quiet"]


# A process that has imported the miner once and forks a `miner mine` per request: each run is a
# real process killed with SIGKILL, but the half second of interpreter start and imports is paid
# once, so the kills land in the chain work and 200 of them take seconds, not a minute.
_ZYGOTE = textwrap.dedent("""
    import json, os, signal, sys
    import importlib
    cli = importlib.import_module("miner.cli.main")
    import miner.cli.mine, miner.chain.chain, miner.chain.files, miner.chain.lock  # noqa: F401
    import miner.mining.loop, miner.mining.sources.local, miner.mining.startup, miner.backends.ref  # noqa: F401
    import miner.ui.reporting, miner.consensus.params, miner.backends.registry, miner.cli.options  # noqa: F401
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped as they die
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            cli.install_process_policy()
            os._exit(cli.main(json.loads(line)))
        print(pid, flush=True)
""")


class _Zygote:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def mine(self, path) -> int:
        self.proc.stdin.write(json.dumps(_mine_cmd(path)[3:]) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    @staticmethod
    def kill(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return  # dead and reaped: its file is as it left it
            time.sleep(0.001)
        raise AssertionError(f"process {pid} outlived SIGKILL")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_sigkill_at_random_moments_never_leaves_a_broken_file(tmp_path):
    """200 runs of `miner mine` killed at random moments: half within twice the time from the
    fork to the file's first appearance (measured here, so they land in the creation on any
    machine), half 0 to 200 ms into the chain work. Each time the file is absent, or opens as a
    writer, verifies, and mining goes on (the next run continues the same file half of the time)."""
    zygote = _Zygote()
    try:
        appears = []
        for n in range(5):  # the median of a few: the first fork still warms caches up
            probe = tmp_path / f"probe-{n}.sqlite"
            t0 = time.perf_counter()
            pid = zygote.mine(probe)
            while not probe.exists() and time.perf_counter() - t0 < 30:
                time.sleep(0.0005)
            appears.append(time.perf_counter() - t0)
            zygote.kill(pid)
        appear = sorted(appears)[2]
        offset = max(0.0, appear - 0.1)
        rng = random.Random(2026)
        path, outcomes = None, {"absent": 0, "present": 0}
        deadline = time.monotonic() + 600
        for i in range(200):
            assert time.monotonic() < deadline, "crash test ran past its time bound"
            if path is None or rng.random() < 0.5:
                path = tmp_path / f"crash-{i}.sqlite"
            pid = zygote.mine(path)
            # half the kills in the creation itself, half anywhere in the first 200 ms of work
            time.sleep(rng.uniform(0, 2 * appear) if rng.random() < 0.5 else offset + rng.uniform(0, 0.2))
            zygote.kill(pid)
            if not path.exists():
                outcomes["absent"] += 1
                continue
            outcomes["present"] += 1
            with Chain.open(path) as chain:  # a writer: the start-up check passes too
                assert chain.verify() == chain.height
    finally:
        zygote.close()
    print(f"offset {offset * 1e3:.0f} ms, outcomes {outcomes}")
    assert outcomes["present"] > 0 and outcomes["absent"] > 0
    leftovers = [p.name for p in tmp_path.iterdir() if ".creating-" in p.name]
    assert len(leftovers) <= 4 * outcomes["absent"]  # only from runs killed mid-creation


def test_two_miners_creating_the_same_file_at_once(tmp_path):
    path = tmp_path / "shared.sqlite"
    cmd = [sys.executable, "-m", "miner", "mine", "--backend", "ref", "--preset", "regtest", "--blocks", "3",
           "--chain", str(path), "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:  # stopped here even if the test fails or times out
            p.kill()
            p.wait()
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err
    with Chain.open(path, readonly=True) as chain:
        assert chain.verify() >= 3


# ---------------------------------------------------------------- 3. a clock behind the chain

def test_mine_on_a_chain_ahead_of_the_clock_fails_at_once(tmp_path):
    """Blocks three hours ahead of the clock: no valid next block exists yet. One clear line,
    no spinning (the subprocess must end well inside its timeout)."""
    path = tmp_path / "future.sqlite"
    Chain.create(path, preset("regtest", int(time.time()) + 3 * 3600)).close()
    t0 = time.monotonic()
    proc = miner("mine", "--backend", "ref", "--blocks", "1", "--chain", str(path), timeout=60)
    one_line_error(proc, 1, "ahead of this computer's clock")
    assert time.monotonic() - t0 < 30


# ---------------------------------------------------------------- 5. one line, never a traceback

def test_height_too_large_for_sqlite(pristine):
    one_line_error(miner("chain", "show", "9223372036854775808", "--chain", str(pristine)), 2, "no block at height")


def test_dev_null_is_not_a_chain():
    journal = Path("/dev/null-journal")
    existed = journal.exists()
    for args in (["mine", "--backend", "ref"], ["chain", "info"], ["chain", "verify"]):
        one_line_error(miner(*args, "--chain", "/dev/null"), 2, "not a regular file")
    assert journal.exists() == existed


def test_missing_chain_is_a_usage_error_and_damaged_is_exit_1(pristine, tmp_path):
    one_line_error(miner("chain", "info", "--chain", str(tmp_path / "none.sqlite")), 2, "no such chain file")
    bad = copy_of(pristine, tmp_path)
    edit(bad, "UPDATE meta SET value='[]' WHERE key='params'")
    for args in (["chain", "info"], ["chain", "verify"], ["chain", "show", "1"], ["mine", "--backend", "ref"]):
        one_line_error(miner(*args, "--chain", str(bad)), 1, "parameters are damaged")


def test_body_as_text_is_named_by_every_command(pristine, tmp_path):
    path = copy_of(pristine, tmp_path)
    edit(path, "UPDATE blocks SET body='not a body' WHERE height=5")
    verify = miner("chain", "verify", "--chain", str(path), "--json")
    assert verify.returncode == 1 and json.loads(verify.stdout)["bad_height"] == 5
    one_line_error(miner("chain", "show", "5", "--chain", str(path)), 1, "block 5")
    assert miner("chain", "info", "--chain", str(path)).returncode == 0  # headers are intact


def test_plot_writes_exactly_the_path_given_in_the_format_it_names(pristine, tmp_path):
    for name, magic in (("out.png", b"\x89PNG\r\n\x1a\n"), ("out.PDF", b"%PDF-"), ("out.svg", b"<?xml")):
        out = tmp_path / name
        proc = miner("chain", "plot", str(out), "--chain", str(pristine))
        assert proc.returncode == 0 and proc.stdout.strip() == f"wrote {out}", proc.stderr
        assert out.read_bytes().startswith(magic), name
    one_line_error(miner("chain", "plot", str(tmp_path / "out.txt"), "--chain", str(pristine)), 2,
                   "give a file name ending .png, .svg or .pdf")
    assert not (tmp_path / "out.txt").exists() and not (tmp_path / "out.txt.png").exists()
    full = tmp_path / "full.png"
    full.symlink_to("/dev/full")  # a disk with no room left
    one_line_error(miner("chain", "plot", str(full), "--chain", str(pristine)), 2, f"cannot write {full}")
    one_line_error(miner("chain", "plot", str(tmp_path / "nodir" / "x.png"), "--chain", str(pristine)), 2,
                   "no such directory")
    one_line_error(miner("compare", "--backend", "ref", "--count", "1000", "--plot",
                         str(tmp_path / "nodir" / "c.png")), 2, "no such directory")


def test_info_warns_of_damage_and_names_a_stray_row(pristine, tmp_path):
    gap = copy_of(pristine, tmp_path, "gap.sqlite")
    edit(gap, "DELETE FROM blocks WHERE height=7")
    proc = miner("chain", "info", "--chain", str(gap), "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["damage"] == "block 7 is missing"
    assert "warning" in proc.stderr and "Traceback" not in proc.stderr
    stray = copy_of(pristine, tmp_path, "stray.sqlite")
    edit(stray, "INSERT INTO blocks (seq, hash, height, header, body) VALUES (-1, x'00', -1, x'00', x'00')")
    proc = miner("chain", "info", "--chain", str(stray), "--json")
    assert proc.returncode == 1 and "stray block row at height -1" in proc.stdout
    verify = miner("chain", "verify", "--chain", str(stray), "--json")
    assert json.loads(verify.stdout)["bad_height"] == -1


def test_bad_chain_path_is_reported_before_the_compile(tmp_path):
    """With an empty numba cache a compile takes about a minute: the error must come first."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    t0 = time.monotonic()
    proc = miner("mine", "--backend", "cpu", "--chain", str(tmp_path / "nodir" / "c.sqlite"), env=env)
    one_line_error(proc, 2, "no such directory")
    assert time.monotonic() - t0 < 20


# ---------------------------------------------------------------- other users, full and read-only disks

@contextmanager
def tmpfs(where: Path, size: str):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount for a small filesystem")
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_only_filesystem_reads_and_refuses_writes_up_front(pristine, tmp_path):
    """A valid chain on read-only media can be read and verified. Mining on it, or creating a
    new chain there, fails before any mining (it used to mine a whole block first) with one
    line, and the file is unchanged. (A read-only mount is what a file or folder without write
    permission is to a non-root user; tests run as root, who ignores permission bits.)"""
    with tmpfs(tmp_path / "ro", "4m") as mnt:
        path = copy_of(pristine, mnt)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        before = digest(path)
        assert miner("chain", "info", "--chain", str(path)).returncode == 0
        verify = miner("chain", "verify", "--chain", str(path), "--json")
        assert verify.returncode == 0 and json.loads(verify.stdout)["height"] == 12
        proc = miner("mine", "--backend", "ref", "--chain", str(path), "--json")
        one_line_error(proc, 1, "cannot")
        assert '"event": "block"' not in proc.stdout
        one_line_error(miner("mine", "--backend", "ref", "--chain", str(mnt / "new.sqlite")), 1,
                       "cannot create the chain file")
        assert digest(path) == before


def test_disk_full_while_mining_ends_with_a_summary_and_loses_nothing(tmp_path):
    with tmpfs(tmp_path / "small", "768k") as mnt:
        path = mnt / "chain.sqlite"
        proc = miner("mine", "--backend", "ref", "--preset", "regtest", "--blocks", "5000", "--chain", str(path),
                     "--json", timeout=300)
        one_line_error(proc, 1, "could not be stored")
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        summary = events[-1]
        assert summary["event"] == "summary" and summary["blocks"] > 0
        accepted = [e["height"] for e in events if e["event"] == "block"]
        with Chain.open(path, readonly=True) as chain:
            assert chain.verify() == chain.height == accepted[-1]  # every block reported is there
        again = miner("mine", "--backend", "ref", "--blocks", "1", "--chain", str(path), timeout=120)
        assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr
        strays = [p.name for p in mnt.iterdir() if not p.name.startswith(path.name)]
        assert not strays  # no half-made files left beside the chain
        with Chain.open(path, readonly=True) as chain:
            assert chain.verify() == accepted[-1]


# ---------------------------------------------------------------- 7. signals end a run with the summary

def _start_mining(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "miner", "mine", "--backend", "ref", "--blocks", "50",
                             "--chain", str(tmp_path / "sig.sqlite"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # the start event: the coordinator is running
        assert json.loads(first)["event"] == "start"
    except BaseException:
        proc.kill()  # never left running when the start fails
        proc.wait()
        raise
    time.sleep(0.3)
    return proc


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGHUP], [signal.SIGINT, signal.SIGINT]])
def test_signals_end_mining_with_a_summary(tmp_path, signals):
    proc = _start_mining(tmp_path)
    try:
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["event"] == "summary" and summary["interrupted"] is True
    assert "Traceback" not in err
    with Chain.open(tmp_path / "sig.sqlite", readonly=True) as chain:
        chain.verify()


@pytest.mark.parametrize("late", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_summary_is_ignored(tmp_path, late):
    """The user presses Ctrl-C again as the summary appears: between the command's return and the
    interpreter's exit (which puts SIG_DFL back) that used to kill the process by SIGINT."""
    proc = _start_mining(tmp_path)
    try:
        proc.send_signal(signal.SIGINT)
        for line in proc.stdout:
            if json.loads(line)["event"] == "summary":
                proc.send_signal(late)  # as soon as the summary is out, before the process ends
                break
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_params_with_a_list_name_are_refused_not_crashed():
    with pytest.raises(Exception) as info:
        ChainParams.from_json(json.dumps({**json.loads(preset("local", 1).to_json()), "name": ["x"]}))
    assert "name must be str" in str(info.value)


REGTEST_CORE_EDITS = {"max_future": 99_999, "spacing": 2, "rule": "windowed", "halflife": 3601, "name": "local"}


@pytest.mark.parametrize("key", list(REGTEST_CORE_EDITS))
def test_a_regtest_core_chains_parameters_are_committed_by_its_preset(tmp_path, key):
    """Issue 33: Core's regtest genesis commits to none of our parameters, so these edits passed
    `chain verify`. A chain on that genesis must hold the preset's own parameters: an edit is
    refused by verify and by the node, each in one line, the file unchanged."""
    path = tmp_path / "chain.sqlite"
    Chain.create(path, preset("regtest-core", 0)).close()
    assert miner("chain", "verify", "--chain", str(path)).returncode == 0
    set_param(path, key, REGTEST_CORE_EDITS[key])
    before = digest(path)
    one_line_error(miner("chain", "verify", "--chain", str(path)), 1, "differ from it")
    line = one_line_error(miner("node", "--chain", str(path), "--rpc-port", "0", "--backend", "ref"), 1,
                          "parameters are damaged")
    assert key in line
    assert digest(path) == before


def _nested_message(path: Path) -> None:
    conn = sqlite3.connect(path)
    text = conn.execute("SELECT value FROM meta WHERE key='params'").fetchone()[0]
    conn.execute("UPDATE meta SET value=? WHERE key='params'",
                 (text[:-1] + ', "message": ' + "[" * 100_000 + "]" * 100_000 + "}",))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: edit(p, "UPDATE blocks SET body=CAST(body AS TEXT) WHERE height=12"), "chain file is damaged"),
    (_nested_message, "nested too deeply"),
], ids=["tip body stored as TEXT", "a parameter nested 100,000 deep"])
def test_the_node_and_the_miner_name_a_damaged_file_in_one_line(pristine, tmp_path, damage, fragment):
    """Issue 33: `miner node` (and `miner mine`) printed a traceback for a tip body SQLite stores
    as TEXT and for a stored parameter nested past Python's recursion limit, where `chain verify`
    gave one line."""
    path = copy_of(pristine, tmp_path)
    damage(path)
    for args in (["node", "--rpc-port", "0", "--backend", "ref"], ["mine", "--blocks", "1", "--backend", "ref"],
                 ["chain", "verify"]):
        one_line_error(miner(*args, "--chain", str(path)), 1, fragment)
