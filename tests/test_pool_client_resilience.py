"""The mining client never stops hashing while it has work, and never gives up on a node or pool
that is only away for a while: a refused block leaves the job searched on; a pool's own words
for a refusal are shown; a hit that meets the block target but not the share target is sent
once a tip at most; a stalled pool is left; a pool that sends something malformed, and a node
that is killed and restarted, are retried with back-off (forever by default, as cpuminer's
--retries -1) until they answer. Real processes and sockets on 127.0.0.1; every process a test
starts is stopped by it."""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import sys
import time

from support.cliproc import assert_one_line_error, run
from support.jobs import EASY, job_params
from support.nodeproc import ROOT, NodeProcess, make_chain
from support.scripted_pool import ScriptedPool
from support.stratum_miner import build_header, dsha

from miner.mining.sources.pool_url import PoolUrl
from miner.mining.sources.stratum import StratumSource
from miner.primitives.compact import DIFF1_TARGET
from miner.ui.reporting import goal_words

ABOVE_TARGET = {"result": False, "error": None, "reject-reason": "Above target"}  # ckpool's shape


def miner(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "miner", "mine", "--backend", "ref", "--json", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.kill()
    return proc.communicate(timeout=30)


def hash_of(params: list, job: list, extranonce1: str = "aabbccdd", mask: int = 0x1FFFE000) -> int:
    version = 0x20000000
    if len(params) > 5:
        version = (version & ~mask) | int(params[5], 16)
    header = build_header(job, extranonce1, bytes.fromhex(params[2]), int(params[3], 16), int(params[4], 16),
                          version)
    return int.from_bytes(dsha(header), "little")


def test_a_refused_block_leaves_the_job_searched_and_block_only_hits_are_sent_once():
    """Block target 2^246, share target 2^244 (difficulty 2^-20): three hits in four meet only the
    block target. The pool (ckpool's way) refuses the first five submits with its reject-reason.
    The client sends one block-only hit, learns the pool judges the share first, then sends only
    shares (every one a block here), and keeps hashing the same job through every refusal:
    before, the first refused block ended the job and the client waited for work that never came."""
    job = job_params("a")
    job[6] = "1f400000"  # 0x400000 << 224 = 2^246
    answers = iter([ABOVE_TARGET] * 5)
    pool = ScriptedPool(on_connect=[{"method": "mining.set_difficulty", "params": [EASY]},
                                    {"method": "mining.notify", "params": job}])
    pool.submit_result = lambda params: next(answers, True)
    proc = miner("--url", f"stratum+tcp://ken@127.0.0.1:{pool.port}", "--shares", "1")
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        stop(proc)
        pool.close()
    assert proc.returncode == 0, err[-2000:]
    share_target, block_target = int(DIFF1_TARGET / EASY), 1 << 246
    values = [hash_of(p, job) for p in pool.submits]
    assert all(v <= block_target for v in values)
    assert len([v for v in values if v > share_target]) == 1  # one block-only hit, never a flood
    assert len(values) >= 6 and all(p[1] == "a" for p in pool.submits)  # no new job was needed
    events = [json.loads(line) for line in out.splitlines()]
    refused = [e for e in events if e["event"] in ("share", "block") and e.get("verdict") == "Above target"]
    assert len(refused) == 5  # the pool's words, verbatim
    start = next(e for e in events if e["event"] == "start")
    assert start["shares"] == 1 and events[-1]["shares"]["accepted"] == 1


def test_the_start_line_says_what_ends_the_run():
    assert goal_words(0, 40) == "40 accepted share(s)"
    assert goal_words(2, 40) == "40 accepted share(s) or 2 block(s)"
    assert goal_words(5) == "5 block(s)"
    assert goal_words(0) == "until stopped"


def test_a_stalled_pool_is_left_for_the_next_and_gone_back_to():
    """A pool that sends one job and then nothing (no job, no accepted share) is stalled once the
    expected share time times the factor has passed: the client moves to the next pool, and
    comes back to the first when it answers again."""
    silent = ScriptedPool("11111111", on_connect=[{"method": "mining.set_difficulty", "params": [EASY]},
                                                  {"method": "mining.notify", "params": job_params("s")}])
    backup = ScriptedPool("22222222", on_connect=[{"method": "mining.set_difficulty", "params": [EASY]},
                                                  {"method": "mining.notify", "params": job_params("b")}])
    events: queue.Queue = queue.Queue()
    urls = [PoolUrl("127.0.0.1", silent.port, "lee", "x"), PoolUrl("127.0.0.1", backup.port, "lee", "x")]
    source = StratumSource(urls, on_event=events.put, retry_primary=1.0, stall_factor=2.0, stall_floor=0.5)
    source.measure_rate(lambda: 1e6)  # a share expected every 4 ms: stalled after the floor
    try:
        source.open()
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len([e for e in seen if e.get("status") == "connected"]) < 3:
            backup.send("mining.notify", job_params("b", clean=False))  # the backup keeps working
            try:
                seen.append(events.get(timeout=0.2))
            except queue.Empty:
                pass
    finally:
        source.stop()
        silent.close()
        backup.close()
    lost = [e["reason"] for e in seen if e.get("status") == "disconnected"]
    assert lost[0].startswith("stalled: no new job and no accepted share in 0.5 s; subscribing at the next pool")
    assert lost[1].startswith("going back to "), seen
    connected = [e["extranonce1"] for e in seen if e.get("status") == "connected"]
    # the first, the backup after the stall, the first again when the look-back finds it
    assert connected[:3] == ["11111111", "22222222", "11111111"], seen


def test_a_pool_that_sends_garbage_is_retried_with_back_off_until_it_mends():
    """Before: the first malformed line ended the run with 'cannot mine at any pool'."""
    pool = ScriptedPool(garbage=b"this is not json\n",
                        on_connect=[{"method": "mining.set_difficulty", "params": [EASY]},
                                    {"method": "mining.notify", "params": job_params("g")}])
    proc = miner("--url", f"stratum+tcp://mia@127.0.0.1:{pool.port}", "--shares", "1")
    try:
        pool.wait(lambda: pool.connections >= 3, timeout=30)
        assert proc.poll() is None  # still there, retrying
        began = time.monotonic()
        pool.wait(lambda: pool.connections >= 4, timeout=30)
        assert time.monotonic() - began >= 0.9  # the pauses double (0.5, 1, 2 s): not hammered
        pool.garbage = None  # the pool mends
        out, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
        pool.close()
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    events = [json.loads(line) for line in out.splitlines()]
    retrying = [e for e in events if e.get("status") == "retrying"]
    assert len(retrying) >= 3 and "not JSON" in retrying[0]["reason"]
    assert [e["wait"] for e in retrying[:3]] == [0.5, 1.0, 2.0]
    assert events[-1]["shares"]["accepted"] == 1


def test_retries_n_gives_up_with_one_line():
    proc = run("mine", "--url", "stratum+tcp://ned@127.0.0.1:1", "--retries", "2", "--backend", "ref", timeout=60)
    assert_one_line_error(proc, 1, "cannot mine at any pool: stratum+tcp://ned@127.0.0.1:1: cannot connect")
    proc = run("mine", "--url", "http://u:p@127.0.0.1:1", "--retries", "1", "--backend", "ref", timeout=60)
    assert_one_line_error(proc, 1, "cannot reach the node")
    proc = run("mine", "--url", "http://u:p@127.0.0.1:1", "--retries", "-2")
    assert_one_line_error(proc, 2, "--retries")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_node_killed_and_restarted_twice_does_not_end_its_miner(tmp_path):
    """Before: the miner survived the first restart (the long poll retried) and exited at the
    second with 'cannot reach the node', raised by a call other than the long poll."""
    chain = make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 19)
    port = _free_port()
    node = NodeProcess(chain, "--rpc-port", str(port))
    proc = miner("--url", f"http://127.0.0.1:{port}", "--rpc-cookie-file", str(node.cookie), "--blocks", "8")
    try:
        for _ in range(2):
            deadline = time.monotonic() + 60
            start = node.call("getblockcount")
            while node.call("getblockcount") < start + 2:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()[-2000:]
                time.sleep(0.1)
            node.stop(signal.SIGKILL)
            time.sleep(1.5)  # the miner finds nobody: its calls fail and are retried
            assert proc.poll() is None
            node = NodeProcess(chain, "--rpc-port", str(port))
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        events = [json.loads(line) for line in out.splitlines()]
        taken = [e["hash_hex"] for e in events if e["event"] == "block" and e["verdict"] == "accepted"]
        assert len(taken) == 8
        assert any(e.get("status") == "retrying" for e in events)
        for block_hash in taken:  # every block the node acknowledged is on it
            assert node.call("getblockheader", block_hash)["hash"] == block_hash
    finally:
        stop(proc)
        node.stop()
