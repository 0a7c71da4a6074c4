"""What `miner mine` shows: the live view's figures and layout, and each output mode as a user gets it
(a real terminal through a pty, a pipe, JSON, Ctrl-C)."""

import fcntl
import io
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest
from miner.bench.chain_verify import GENESIS_TIME
from rich.console import Console

from miner.backends.ref import ReferenceBackend
from miner.chain.chain import Chain
from miner.consensus.params import preset
from miner.mining.coordinator import Coordinator
from miner.mining.loop import mine
from miner.mining.sources.local import LocalChainSource
from miner.primitives.compact import difficulty
from miner.ui.live import MiningView, expected_hashes, render, snapshot

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_expected_hashes_matches_the_hit_probability():
    assert expected_hashes((1 << 256) - 1) == 1.0  # every hash is a hit
    assert expected_hashes((1 << 255) - 1) == 2.0
    assert expected_hashes((1 << 224) - 1) == float(1 << 32)


def test_snapshot_after_real_mining(tmp_path):
    """Shares add up, the expected time is expected hashes over the summed rate, tip and counts
    follow the chain."""
    chain = Chain.create(tmp_path / "c.sqlite", preset("regtest", GENESIS_TIME))
    backends = [ReferenceBackend(name="ref-a"), ReferenceBackend(name="ref-b")]
    jobs = []
    with Coordinator(backends, unit_seconds=0.02) as coordinator:
        mine(coordinator, LocalChainSource(chain), 3, lambda ev: None, on_job=jobs.append)
    assert [j.height for j in jobs] == [1, 2, 3]
    job = jobs[-1]
    t0 = time.perf_counter()
    snap = snapshot(coordinator, backends, job, t0 - 1.5, 3, 5, t0 - 10, now=t0)
    assert [d.name for d in snap.devices] == ["ref-a", "ref-b"]
    assert sum(d.hashes for d in snap.devices) == sum(s.hashes for s in coordinator.stats.values()) > 0
    assert sum(d.share for d in snap.devices) == pytest.approx(1.0)
    assert snap.total_rate == pytest.approx(sum(s.rate for s in coordinator.stats.values()))
    assert snap.total_rate > 0
    assert snap.expected_seconds == pytest.approx(expected_hashes(job.target) / snap.total_rate)
    assert snap.tip_height == 2 and snap.bits == job.bits
    assert snap.difficulty == pytest.approx(difficulty(job.target))
    assert snap.block_seconds == pytest.approx(1.5) and snap.elapsed == pytest.approx(10)
    assert (snap.blocks_found, snap.blocks_wanted) == (3, 5)
    chain.close()


def test_snapshot_before_any_job_or_hash():
    backends = [ReferenceBackend()]
    snap = snapshot(Coordinator(backends), backends, None, 0.0, 0, 4, 0.0, now=2.0)
    assert snap.tip_height is None and snap.expected_seconds is None
    assert snap.devices[0].share == 0.0 and snap.total_rate == 0.0
    text = _render_text(MiningView(Coordinator(backends), backends, 4), 80)
    assert "waiting for work" in text and "0/4" in text


def _render_text(renderable, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()


@pytest.mark.parametrize("width", [80, 120, 160])
def test_view_fits_the_terminal_and_keeps_numbers_whole(tmp_path, width):
    """Every line fits the terminal with no phrase broken: at 80 and 120 columns a device too long
    for its column is shown whole on a line of its own (it was cut to "an unu…"), the status
    breaks between phrases (it broke inside "next block expected in"); rates, counts and shares
    are never cut."""
    chain = Chain.create(tmp_path / "c.sqlite", preset("regtest", GENESIS_TIME))
    backends = [ReferenceBackend(name="ref"), ReferenceBackend(name="ref-2")]
    backends[1].device = "an unusually long device name that cannot fit in a narrow terminal"
    view = MiningView(None, backends, 2)
    with Coordinator(backends, unit_seconds=0.02) as coordinator:
        view.coordinator = coordinator
        mine(coordinator, LocalChainSource(chain), 2, lambda ev: view.block_found(ev.height),
                    on_job=view.set_job)
    view.stop()
    snap = view.snapshot()
    text = _render_text(view, width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), text
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in ("ref", "ref-2")}
    assert set(rows) == {"ref", "ref-2"}, text
    for d in snap.devices:
        assert f"{d.hashes:,}" in rows[d.name] and f"{100 * d.share:.1f}%" in rows[d.name]
    # the frame after the last block is the state at the end: its tip is that block (not the one
    # it was built on), and its timer and the run's clock have stopped
    assert "tip 2 " in text and "blocks 2/2" in text and f"{snap.bits:08x}" in text
    assert snap.block_done and "(last took " in text and "(this one " not in text
    later = view.snapshot()
    assert (later.block_seconds, later.elapsed) == (snap.block_seconds, snap.elapsed)
    long_name = backends[1].device
    if width < 160:
        assert long_name not in rows["ref-2"] and f"ref-2: {long_name}" in lines, text
    else:
        assert long_name in rows["ref-2"], text
    assert "…" not in text
    for phrase in ("next block expected in", "blocks 2/2", f"difficulty {snap.difficulty:.6g}", "(last took "):
        assert any(phrase in line for line in lines), (phrase, text)
    status = lines[:lines.index(next(line for line in lines if line.split()[:1] == ["backend"]))]
    assert len(status) == 2, text  # the chain's line and the speed's line
    chain.close()
    render(snap)  # the default width renders too


# ----------------------------------------------------------------- the command, as a user runs it

def _plain_env(**extra):
    """The environment without the variables that make rich pretend about the terminal."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")}
    return {**env, **extra}


def _mine_cmd(path, *extra):
    return [sys.executable, "-m", "miner", "mine", "--backend", "ref", "--chain", str(path), *extra]


def test_live_view_on_a_real_terminal(tmp_path):
    """Under a pty `miner mine` draws the live panel (tip, difficulty, expected time, per-backend
    rate and share), prints each block above it, and leaves a chain that verifies."""
    path = tmp_path / "t.sqlite"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    env = _plain_env(TERM="xterm-256color")
    proc = subprocess.Popen(_mine_cmd(path, "--blocks", "3", "--preset", "regtest"),
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(30) == 0
    raw = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in raw, "no terminal control sequences: the live view did not run"
    text = ANSI.sub("", raw)
    for fragment in ("next block expected in", "difficulty", "blocks 3/3", "share", "hashlib",
                     "block      3", "3 block(s) in"):
        assert fragment in text, fragment
    # the frame left on screen is the state at the end: the third block is the tip
    last_frame = text[text.rindex("tip "):]
    assert last_frame.startswith("tip 3 ") and "blocks 3/3" in last_frame, last_frame
    with Chain.open(path) as chain:
        assert chain.verify() == 3


def test_piped_output_is_plain_lines(tmp_path):
    path = tmp_path / "p.sqlite"
    proc = subprocess.run(_mine_cmd(path, "--blocks", "2", "--preset", "regtest"), capture_output=True,
                          text=True, timeout=60, env=_plain_env())
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("mining 2 block(s)")
    assert [line.split()[1] for line in lines if line.startswith("block ")] == ["1", "2"]
    assert lines[-2].startswith("2 block(s) in") and lines[-1].split()[0] == "ref"


def test_quiet_prints_only_the_summary(tmp_path):
    proc = subprocess.run(_mine_cmd(tmp_path / "q.sqlite", "--blocks", "2", "--preset", "regtest",
                                    "--quiet"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("2 block(s) in")


def test_json_is_one_object_per_event(tmp_path):
    proc = subprocess.run(_mine_cmd(tmp_path / "j.sqlite", "--blocks", "3", "--preset", "regtest",
                                    "--json"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events if e["event"] != "stale"]
    assert kinds == ["start"] + ["job", "block"] * 3 + ["summary"]
    assert events[0]["backends"] == [{"name": "ref", "kind": "ref", "device": "hashlib (1 thread)"}]
    jobs = [e for e in events if e["event"] == "job"]
    blocks = [e for e in events if e["event"] == "block"]
    assert [j["height"] for j in jobs] == [b["height"] for b in blocks] == [1, 2, 3]
    summary = events[-1]
    assert summary["blocks"] == 3 and not summary["interrupted"]
    (ref,) = summary["backends"]
    assert ref["share"] == 1.0 and ref["hashes"] == summary["hashes"] > 0 and ref["rejected"] == 0


def test_ctrl_c_stops_cleanly_with_a_summary(tmp_path):
    """SIGINT mid-block: exit 130, an 'interrupted' summary, and a chain that still verifies."""
    path = tmp_path / "i.sqlite"
    # The windowed preset starts at ~2^26 hashes a block: the hashlib backend is surely mid-block
    # (the default `local` starts at 2^17, a block in half a second, and would be done).
    proc = subprocess.Popen(_mine_cmd(path, "--blocks", "5", "--preset", "local-windowed"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("mining 5 block(s)"), first + proc.stderr.read()
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()  # a no-op once it has exited; stops it if the test failed first
        proc.wait()
    assert proc.returncode == 130, err
    summary = re.match(r"interrupted: (\d+) block\(s\)", out.splitlines()[0])
    assert summary, out
    assert "Traceback" not in err
    # Mid-block is only likely (a block in that second has odds of about 1 in 70): whatever
    # was found is exactly what the chain holds, and nothing half-written is there.
    with Chain.open(path) as chain:
        assert chain.verify() == int(summary.group(1))


def test_at_a_pool_the_view_names_shares_and_shows_the_pools_line():
    """A pool's job is a share target: the panel says share difficulty and next share, shows the
    pool line the reporter keeps (where, difficulty, verdicts with the last reason), and counts
    blocks without a wanted number when mining until stopped."""
    from dataclasses import replace

    from miner.mining.loop import ShareFound, ShareTally
    from miner.mining.work import Job
    from miner.primitives.coinbase import coinbase_template
    from miner.ui.reporting import LiveReporter

    backends = [ReferenceBackend()]
    coordinator = Coordinator(backends)
    job = Job("1:a", 5, 0x20000000, b"\x01" * 32, coinbase_template(5), (), 1_700_000_000, 0x1D00FFFF,
              (0xFFFF << 208) * 100, shares=True)
    console = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False)
    reporter = LiveReporter(console)
    reporter.view = MiningView(coordinator, backends, 0)
    reporter.pool({"event": "pool", "status": "connected", "url": "stratum+tcp://a.b@127.0.0.1:1",
                   "extranonce1": "00", "extranonce2_size": 4, "version_mask": "1fffe000"})
    reporter.pool({"event": "pool", "status": "difficulty", "url": "stratum+tcp://a.b@127.0.0.1:1",
                   "difficulty": 0.01})
    tally = ShareTally()
    for accepted, verdict in ((True, "accepted"), (False, "Job not found (stale) (21)")):
        tally.add(accepted, verdict, 0.02)
        reporter.share(ShareFound(5, "1:a", "00" * 32, 1, 2, 0.02, 0.01, accepted, verdict, "ref"), tally)
    reporter.view.set_job(job)
    text = _render_text(reporter.view, 120)
    assert "share difficulty 0.01" in text and "next share expected in" in text and "blocks 0 " in text
    assert ("pool stratum+tcp://a.b@127.0.0.1:1  difficulty 0.01  shares 1 accepted, 1 rejected "
            "(last: Job not found (stale) (21))") in text
    reporter.view.set_job(replace(job, shares=False))  # the local chain: no pool words
    assert "share" not in _render_text(reporter.view, 120).split("pool")[0]


@pytest.mark.parametrize("receiver", ["process", "other thread"])
def test_a_stop_signal_during_a_line_waits_for_the_line(receiver):
    """Random-order runs read an event and the summary on one line, or an empty line: a stop
    signal handled inside a write cut the line short. The signal now waits until the line is
    out, then ends the run as before. "other thread": the kernel handed the process's signal to
    a thread that was not writing (CI's run, where a worker thread was alive), and Python ran the
    handler in the writing main thread all the same; holding the signal in the writer's mask
    alone lost the whole line there."""
    from miner.cli.interrupts import InterruptOnce
    from miner.ui.reporting import JsonReporter

    idle = threading.Event()
    bystander = threading.Thread(target=idle.wait, daemon=True)
    bystander.start()

    class Signalled(io.StringIO):
        def write(self, s):
            if receiver == "process":
                os.kill(os.getpid(), signal.SIGTERM)  # arrives while the line is being written
            else:
                signal.pthread_kill(bystander.ident, signal.SIGTERM)
                time.sleep(0.05)  # the C handler has run in the bystander; Python's is due here
            return super().write(s)

    previous = signal.signal(signal.SIGTERM, InterruptOnce())
    out = Signalled()
    try:
        with pytest.raises(KeyboardInterrupt):
            JsonReporter(out).backend_event({"event": "backend", "status": "joined", "backend": "cpu",
                                             "message": "x"})
    finally:
        signal.signal(signal.SIGTERM, previous)
        idle.set()
        bystander.join()
    assert out.getvalue().endswith("\n") and json.loads(out.getvalue())["status"] == "joined"


def test_a_stop_signal_outside_a_line_still_interrupts_at_once():
    """The deferral is for lines only: a stop anywhere else raises where it lands, and a line
    written afterwards (the summary) is not cut or interrupted by the earlier stop."""
    from miner.cli.interrupts import InterruptOnce
    from miner.ui.reporting import JsonReporter

    previous = signal.signal(signal.SIGTERM, InterruptOnce())
    out = io.StringIO()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        assert time.monotonic() - started < 20  # the sleep was cut, not waited out
        JsonReporter(out).backend_event({"event": "backend", "status": "joined", "backend": "cpu",
                                         "message": "x"})
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert json.loads(out.getvalue())["status"] == "joined"


def test_a_refused_block_or_a_pools_share_job_keeps_the_tip():
    """Only a block the chain or node took moves the tip: a refused one does not, and at a pool
    the share job goes on being mined after a block, so its timer keeps running."""
    from dataclasses import replace

    from miner.mining.work import Job
    from miner.primitives.coinbase import coinbase_template

    backends = [ReferenceBackend()]
    job = Job("1:a", 5, 0x20000000, b"\x01" * 32, coinbase_template(5), (), 1_700_000_000, 0x1D00FFFF,
              0xFFFF << 208)
    view = MiningView(Coordinator(backends), backends, 0)
    view.set_job(job)
    view.block_found(5, taken=False)
    assert view.snapshot().tip_height == 4 and not view.snapshot().block_done
    view.block_found(5)
    assert view.snapshot().tip_height == 5 and view.snapshot().block_done
    t0 = time.perf_counter()
    at_pool = snapshot(Coordinator(backends), backends, replace(job, shares=True), t0 - 2, 1, 0, t0 - 9,
                       now=t0, found=(5, t0 - 1))
    assert at_pool.tip_height == 4 and at_pool.block_seconds == pytest.approx(2)


def _widest_block(backend: str, verdict: str):
    from miner.mining.loop import BlockFound
    # a 7-digit height, a difficulty in e-notation, 27 hours for the block at over a TH/s
    return BlockFound(height=1_234_567, hash_hex="0000000000000000000a3f" + "e" * 36 + "c0ffee",
                      nonce=4_294_967_295, extranonce=2**32 - 1, bits=0x17034219, difficulty=1.23456e14,
                      seconds=99_999.99, hashes=int(1.234e17), backend=backend, verdict=verdict,
                      backend_rate=1.234e12)


@pytest.mark.parametrize("backend", ["ref", "cpu", "cuda:0", "cuda:10"])
@pytest.mark.parametrize("verdict", ["", "accepted", "high-hash",
                                     "error -25: bad-txns-inputs-missingorspent, a long explanation "
                                     "the node gave of why it refused block 1234567 " * 2])
def test_a_block_line_fits_100_columns_with_every_number_and_the_whole_reason(backend, verdict):
    """The widest realistic values, on a line of at most 100 columns: nothing cut (every number
    with its unit is there whole), and a refusal's reason is all there, on the lines below when
    it does not fit beside the rest."""
    from miner.ui.reporting import block_line
    from miner.ui.units import format_rate

    ev = _widest_block(backend, verdict)
    text = block_line(ev)
    lines = text.split("\n")
    assert all(len(line) <= 100 for line in lines), [len(line) for line in lines]
    first = lines[0]
    for whole in ("block 1234567", "000000000000…c0ffee", "diff 1.235e+14", "99999.99 s",
                  format_rate(ev.backend_rate), backend):
        assert whole in first, (whole, first)
    assert format_rate(ev.backend_rate) == "1234.00 GH/s"
    if verdict in ("", "accepted"):
        assert text == first and first.endswith(f"{backend}  {verdict}".rstrip())
    else:
        assert "refused:" in first
        assert " ".join(text.split("refused:", 1)[1].split()) == " ".join(verdict.split())


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("shares", [False, True])
def test_the_widest_panel_and_start_lines_fit_80_and_120_columns(width, shares):
    """The widest realistic figures (a 7-digit tip, difficulty in e-notation, a TH/s rate, a wait
    of years, a million blocks asked for, a pool line) and a real CPU device description: every
    line of the start and of the panel fits, each phrase whole on one line."""
    from miner.ui.live import DeviceLine, MiningSnapshot
    from miner.ui.reporting import LiveReporter

    cpu = "numba SHA-256d, SIMD 16 lanes (AVX-512), 1,024 thread(s)"
    devices = (DeviceLine("cuda:10", "NVIDIA H100 80GB HBM3, 132 SMs, launch 256x256 (tuned)", 1.234e12,
                          123_456_789_012_345, 99_999, 9_999, 0, 0.999),
               DeviceLine("cpu", cpu, 9.87e8, 1_234_567_890_123, 999, 0, 0, 0.001))
    snap = MiningSnapshot(devices, 1.235e12, 1_234_567, 0x17034219, 1.23456e14, 86_400 * 999.0, 86_400 * 99.0,
                          999_999, 1_000_000, 86_400 * 999.0,
                          pool="pool stratum+tcp://pool.example.org:3333  difficulty 65536  shares 99999 "
                               "accepted, 999 rejected (last: high-hash)" if shares else "",
                          shares=shares)
    lines = _render_text(render(snap, width), width).splitlines()
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    what = "share" if shares else "block"
    for phrase in (f"next {what} expected in 999 days", "blocks 999999/1000000", "up 999 days", "tip 1234567",
                   "1234.00 GH/s", "123,456,789,012,345", f"cpu: {cpu}" if width < 160 else cpu):
        assert any(phrase in line for line in lines), (phrase, text)
    assert "…" not in text

    backends = [ReferenceBackend(name=d.name) for d in devices]
    for b, d in zip(backends, devices):
        b.device = d.device
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    reporter = LiveReporter(console)
    reporter.start({"path": "miner-chain.sqlite", "rule": "asert-capped", "spacing": 3,
                    "metrics": "http://127.0.0.1:9100/metrics"}, backends, 5, 0, Coordinator(backends))
    reporter.stop()
    start = console.file.getvalue().splitlines()
    assert all(len(line) <= width for line in start), "\n".join(start)
    assert start[0] == "mining 5 block(s) on miner-chain.sqlite (asert-capped rule, 3 s spacing) with:", start
    assert any(cpu in line for line in start) and "metrics at http://127.0.0.1:9100/metrics" in start


class _SlowerDevice(ReferenceBackend):
    """hashlib held back to about a fifth of its speed: a slower device beside a faster one."""

    def _search(self, work, nonce_start, count):
        t0 = time.perf_counter()
        found = super()._search(work, nonce_start, count)
        time.sleep(4 * (time.perf_counter() - t0))
        return found


def test_a_block_is_credited_with_its_finders_own_rate(tmp_path):
    """A block line showed the whole block's rate beside the backend that found it ("cpu 264 kH/s",
    really hashlib's): the event now carries the finder's own rate over the block (`backend_rate`)
    apart from the block's mean (`rate`), and the line shows the finder's."""
    from support.nodeproc import chain_params

    from miner.ui.reporting import JsonReporter, block_line
    from miner.ui.units import format_rate

    chain = Chain.create(tmp_path / "c.sqlite", chain_params(1 << 15))
    backends = [ReferenceBackend(name="fast"), _SlowerDevice(name="slow")]
    found = []
    with Coordinator(backends, unit_seconds=0.01) as coordinator:
        # Batches of 30 blocks until each device has found one (at most 10): the slower one's
        # share of the hashes is a sixth or less, so 30 blocks alone miss it now and then.
        for _ in range(10):
            mine(coordinator, LocalChainSource(chain), 30, found.append)
            if {ev.backend for ev in found} >= {"fast", "slow"}:
                break
    chain.close()
    own = {name: s.hashes / s.seconds for name, s in coordinator.stats.items()}
    assert own["slow"] < 0.5 * own["fast"], own
    by = {name: [ev for ev in found if ev.backend == name] for name in own}
    assert by["slow"] and by["fast"], {n: len(v) for n, v in by.items()}
    for ev in found:
        assert format_rate(ev.backend_rate) in block_line(ev)
    # Each block carries its finder's rate, not the other's: the two differ by 4x or more (GIL
    # sharing makes either one's rate vary by 2x from unit to unit, so not tighter than that).
    for ev in by["fast"]:
        assert ev.backend_rate > 2 * own["slow"], (ev.backend_rate, own)
    for ev in by["slow"]:  # the block's mean counts the faster device: the slower one's own is far below
        assert ev.backend_rate < own["fast"] / 2 and ev.backend_rate < 0.6 * ev.rate, (ev.backend_rate, ev.rate, own)
        assert format_rate(ev.rate) not in block_line(ev)
    out = io.StringIO()
    JsonReporter(out).block(by["slow"][0])
    event = json.loads(out.getvalue())
    assert event["backend_rate"] == by["slow"][0].backend_rate and event["rate"] == by["slow"][0].rate
