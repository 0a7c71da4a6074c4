"""Our client at pools nobody here wrote: ckpool and public-pool, fed by Bitcoin Core on regtest.

Live (skipped without the binaries: BITCOIND with CKPOOL, or with PUBLIC_POOL and node): the whole
scenario runs in a network namespace of the test's own (`unshare -n`, loopback only), through
tests/support/pool_interop.py: shares accepted, every block our client was told was taken on Core's
active chain, the pool's own refusal words shown verbatim. Before, our client got 0 shares
accepted at either: it sent the first block-target hit (half of all nonces on regtest) as a
block, the pool judged the share first and refused it, and the client waited for new work.

Recorded (every run): the exchanges those runs had, in tests/fixtures/, are (1) judged again
share by share by this project's own code, and (2) served back to our real client by a pool
that answers exactly what the real one answered, so the client's handshake and its reading of
each pool's refusal keep their shape.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import TESTS, program
from support.nodeproc import ROOT
from support.scripted_pool import ScriptedPool

from miner.node.stratum.difficulty import ShareDifficulty
from miner.node.stratum.jobs_and_shares import StratumJob
from miner.primitives import stratum as sp

FIXTURES = ROOT / "tests" / "fixtures"
SESSIONS = {name: json.loads((FIXTURES / f"{name}-session.json").read_text()) for name in ("ckpool", "public-pool")}
REFUSAL = {"ckpool": "Above target", "public-pool": "Difficulty too low (23)"}  # in each pool's own words


def _can_unshare() -> bool:
    return shutil.which("unshare") is not None and shutil.which("ip") is not None and os.geteuid() == 0


LIVE = {
    "ckpool": (["BITCOIND", "CKPOOL"], 900, None),  # difficulty 1 at least: 2^32 hashes a share
    "public-pool": (["BITCOIND", "PUBLIC_POOL"], 240, "0.001"),  # 16,384 for a miner it does not know
}


def _live_param(name: str):
    needs, _, _ = LIVE[name]
    missing = [v for v in needs if not os.environ.get(v)]
    reason = (f"set {' and '.join(missing)} to run our client at a live {name} (see ../shared/PEERS.md)"
              if missing else "needs root, unshare and ip for a network namespace of the test's own")
    return pytest.param(name, marks=[pytest.mark.skipif(bool(missing) or not _can_unshare(), reason=reason)])


@pytest.mark.parametrize("name", [_live_param("ckpool"), _live_param("public-pool")])
def test_our_client_gets_shares_and_blocks_accepted_at_a_live_pool(name):
    _, seconds, suggest = LIVE[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = ["unshare", "-n", *program("pool_interop", name, str(out)),
               "--seconds", str(seconds), "--shares", "1"]
        if suggest:
            cmd += ["--suggest-difficulty", suggest]
        subprocess.run(cmd, cwd=TESTS, env={**os.environ, "INTEROP_NETNS": "1"}, timeout=seconds + 180, check=True)
        report = json.loads(out.read_text())
    assert report["returncode"] == 0 and "Traceback" not in report["stderr"], report["stderr"]
    summary = report["events"][-1]
    assert summary["shares"]["accepted"] >= 1, summary
    assert report["blocks_taken"] and report["blocks_on_core"] == report["blocks_taken"]
    assert report["core_height_after"] > report["core_height_before"]
    # the first block-target hit that was not a share went once, and came back in the pool's words
    refused = [e for e in report["events"] if e.get("event") in ("share", "block") and e["verdict"] != "accepted"]
    assert [e["verdict"] for e in refused] == [REFUSAL[name]]


# --------------------------------------------------------------------------- recorded sessions

def _messages(session: dict, side: str) -> list[dict]:
    return [json.loads(x["line"]) for x in session["lines"] if x["from"] == side]


@pytest.mark.parametrize("name", list(SESSIONS))
def test_every_recorded_share_is_judged_as_the_pool_judged_it(name):
    """Each share our client sent in the recorded session, rebuilt by this project's own code
    from the pool's notify and the client's submit: the ones the pool accepted meet the
    difficulty it had set, the one it refused meets only the block target, and those that meet
    the block target (as the pool counts it: ckpool never below difficulty 1) are exactly the
    blocks Core took."""
    session = SESSIONS[name]
    lines = [(x["from"], json.loads(x["line"])) for x in session["lines"]]
    subscribe_id = next(m["id"] for who, m in lines if who == "miner" and m.get("method") == "mining.subscribe")
    extranonce1, size = next(m["result"][1:3] for who, m in lines if who == "pool" and m.get("id") == subscribe_id)
    mask = int(next(m["result"]["version-rolling.mask"] for who, m in lines
                    if who == "pool" and isinstance(m.get("result"), dict)), 16)
    replies = {m["id"]: m for who, m in lines if who == "pool" and m.get("id") is not None and "method" not in m}
    jobs, rule, judged = {}, ShareDifficulty(), []
    for _, m in lines:
        if m.get("method") == "mining.set_difficulty":
            rule.announced(m["params"][0])
        elif m.get("method") == "mining.notify":
            jobs[m["params"][0]] = StratumJob.from_notify(m["params"], 4 + size)
            rule.job_sent(m["params"][0], m["params"][8])
        elif m.get("method") == "mining.submit":
            _, job_id, en2, ntime, nonce, bits = m["params"]
            job = jobs[job_id]
            version = (job.job.version & ~mask) | int(bits, 16)
            share = job.share(bytes.fromhex(extranonce1), bytes.fromhex(en2), int(ntime, 16), int(nonce, 16), version)
            accepted = replies[m["id"]].get("result") is True
            difficulty = rule.for_job(job_id, float("nan"))
            meets_share = share.value <= sp.difficulty_to_target(difficulty)
            pool_block = min(job.job.target, sp.difficulty_to_target(1.0)) if name == "ckpool" else job.job.target
            judged.append((accepted, meets_share, share.value <= pool_block, share.header.hash_hex()))
    assert judged, "no share in the session"
    assert all(meets for accepted, meets, _, _ in judged if accepted)
    refused = [j for j in judged if not j[0]]
    assert len(refused) == 1 and not refused[0][1]  # the block-only hit: refused, sent once
    assert {h for accepted, _, block, h in judged if accepted and block} == set(session["blocks_on_core"])


@pytest.mark.parametrize("name", list(SESSIONS))
def test_our_client_reads_each_recorded_pool_as_it_did_live(name):
    """The recorded pool's own handshake answers and first job, served to our real client by a
    scripted pool, and its recorded answer to the client's first submit: the client sends the
    same requests in the same order and shows the refusal in the pool's words."""
    session = SESSIONS[name]
    pool_lines = _messages(session, "pool")
    sent = _messages(session, "miner")
    subscribe = next(m for m in pool_lines if isinstance(m.get("result"), list))
    notes = [m for m in pool_lines if m.get("method") in ("mining.set_difficulty", "mining.notify")]
    first_notify = next(i for i, m in enumerate(notes) if m["method"] == "mining.notify")
    first_submit = next(m for m in sent if m.get("method") == "mining.submit")
    answer = {k: v for k, v in next(m for m in pool_lines if m.get("id") == first_submit["id"]).items() if k != "id"}
    suggest = next((m["params"][0] for m in sent if m.get("method") == "mining.suggest_difficulty"), None)
    pool = ScriptedPool(subscribe["result"][1], subscribe["result"][2],
                        on_connect=[{"method": m["method"], "params": m["params"]} for m in notes[:first_notify + 1]])
    pool.submit_result = answer
    args = ["--url", f"stratum+tcp://{first_submit['params'][0]}:x@127.0.0.1:{pool.port}", "--backend", "ref",
            "--json", "--retries", "0"]
    if suggest is not None:
        args += ["--suggest-difficulty", str(suggest)]
    proc = subprocess.Popen([sys.executable, "-m", "miner", "mine", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        pool.wait(lambda: len(pool.submits) >= 1, timeout=60)
        events = []
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1].get("event") in ("share", "block"):
                break
    finally:
        proc.kill()
        proc.communicate(timeout=30)
        pool.close()
    methods = [m["method"] for m in pool.received][:len([m for m in sent if m.get("method") != "mining.submit"])]
    assert methods == [m["method"] for m in sent if m.get("method") != "mining.submit"][:len(methods)]
    assert pool.received[0]["params"] == sent[0]["params"]  # the version-rolling request, as sent live
    verdicts = [e["verdict"] for e in events if e.get("event") in ("share", "block")]
    assert verdicts == [REFUSAL[name]]
