"""Miner programs (pooler's cpuminer, cpuminer-opt) mining `miner node` as a new user would run them.

cpuminer (and cpuminer-opt) put the template's witness commitment in the coinbase and submit the
coinbase without its witness; Core's submitblock fills in the 32-byte zero witness reserved value,
and so must the node (before it did, 0 of 928 blocks from cpuminer were accepted). The live test
needs the binary (`CPUMINER=/path/to/minerd`, or `minerd` on PATH) and is skipped otherwise; the
exchange it once had with the node, recorded byte for byte in `tests/fixtures/`, is replayed in
every run. The same for Stratum: cpuminer mines a node's Stratum server when it is here, and a
recorded session is rebuilt and replayed in every run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest
from support.nodeproc import ROOT, NodeProcess, make_chain

from miner.chain.chain import Chain
from miner.consensus.checks import check_body
from miner.errors import InvalidBlock
from miner.node.rpc.mining import fill_witness_nonce
from miner.primitives.block import Block
from miner.primitives.compact import bits_to_target
from miner.primitives.merkle import merkle_root
from miner.primitives.witness import find_commitment

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
P2WPKH = bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6")
CPUMINER = os.environ.get("CPUMINER") or shutil.which("minerd")
CPUMINER_OPT = os.environ.get("CPUMINER_OPT") or shutil.which("cpuminer")
RECORDED = json.loads((ROOT / "tests" / "fixtures" / "cpuminer-gbt-exchange.json").read_text())


def test_the_recorded_cpuminer_block_is_accepted_only_with_the_reserved_value_filled_in():
    request = RECORDED["getblocktemplate"]["request"]
    assert request["method"] == "getblocktemplate" and request["params"][0]["rules"] == ["segwit"]
    template = RECORDED["getblocktemplate"]["reply"]["result"]
    submitted = RECORDED["submitblock"]["request"]["params"][0]
    assert RECORDED["submitblock"]["reply"] == {"result": None, "error": None, "id": 1}
    block = Block.parse(bytes.fromhex(submitted))
    coinbase = block.txs[0]
    height = template["height"]
    # What cpuminer sends: the commitment of the template, a coinbase without a witness.
    assert find_commitment(coinbase) == bytes.fromhex(template["default_witness_commitment"])[6:]
    assert not coinbase.has_witness
    assert block.header.prev_hash[::-1].hex() == template["previousblockhash"]
    assert block.header.bits == int(template["bits"], 16)
    assert block.header.merkle_root == merkle_root(block.txids)
    assert int.from_bytes(block.hash, "little") <= bits_to_target(block.header.bits)
    assert coinbase.outputs[0].value == template["coinbasevalue"]
    assert coinbase.outputs[0].script_pubkey == P2WPKH  # --coinbase-addr
    with pytest.raises(InvalidBlock) as refused:
        check_body(block, height)
    assert refused.value.reason == "bad-witness-nonce-size"
    filled = fill_witness_nonce(block)
    check_body(filled, height)  # passes: the commitment matches with the zero reserved value
    assert filled.hash == block.hash and filled.txs[0].txid == coinbase.txid
    assert filled.txs[0].witnesses == ((bytes(32),),)


MINERS = {
    "cpuminer": (CPUMINER, "no pooler cpuminer here: set CPUMINER=/path/to/minerd (or put minerd on PATH)"),
    "cpuminer-opt": (CPUMINER_OPT, "no cpuminer-opt here: set CPUMINER_OPT=/path/to/cpuminer (or put it on PATH)"),
}


def _miner_param(name: str):
    binary, reason = MINERS[name]
    return pytest.param(name, marks=pytest.mark.skipif(not binary, reason=reason + " to have it mine a live node"))


def _run_miner(name: str, args: list[str], node: NodeProcess, height: int, algo: str = "sha256d") -> str:
    """The miner program mining `node` until the chain reaches `height` (90 s at most); its output."""
    miner = subprocess.Popen([MINERS[name][0], "-a", algo, "-t", "1", "-D", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while node.call("getblockcount") < height and time.monotonic() < deadline and miner.poll() is None:
            time.sleep(0.2)
    finally:
        miner.terminate()
        try:
            output = miner.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            miner.kill()
            output = miner.communicate()[0]
    return re.sub(r"\x1b\[[0-9;]*m", "", output)


def _verdicts(name: str, output: str) -> tuple[int, set[str]]:
    """(shares or blocks the miner counted accepted, the reasons of those it counted rejected)."""
    if name == "cpuminer":
        return len(re.findall(r"accepted: .*\(yay!!!\)", output)), set(re.findall(r"reject reason: (.+)", output))
    last = re.findall(r"\bA(\d+) S\d+ R(\d+)", output) or re.findall(r"Accepted (\d+) S\d+ R(\d+)", output)
    accepted, rejected = (int(last[-1][0]), int(last[-1][1])) if last else (0, 0)
    return accepted, {f"{rejected} rejected"} if rejected else set()


@pytest.mark.parametrize("name", [_miner_param("cpuminer"), _miner_param("cpuminer-opt")])
def test_miner_programs_mine_a_live_node_over_getblocktemplate(tmp_path, name):
    with NodeProcess(make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 16)) as node:
        start = 17  # past heights 1-16, which both programs' releases encode wrongly (BIP 34)
        assert len(node.call("generatetoaddress", start, ADDRESS, 10**9)) == start
        output = _run_miner(name, ["-o", f"http://127.0.0.1:{node.port}", "-O", node.cookie.read_text(),
                                   "--no-getwork", "--no-stratum", f"--coinbase-addr={ADDRESS}"], node, start + 3)
        height = node.call("getblockcount")
        assert height >= start + 3, output[-2000:]
        accepted, refused = _verdicts(name, output)
        assert accepted >= 3 and refused <= {"inconclusive"}, (accepted, refused)  # stale work only
        for h in range(start + 1, height + 1):
            block = Block.parse(bytes.fromhex(node.call("getblock", node.call("getblockhash", h), 0)))
            coinbase = block.txs[0]
            assert coinbase.witnesses == ((bytes(32),),)  # filled in by the node
            assert coinbase.outputs[0].script_pubkey == P2WPKH


# --------------------------------------------------------------------------- Stratum

SESSIONS = {name: json.loads((ROOT / "tests" / "fixtures" / f"{name}-stratum-session.json").read_text())
            for name in ("cpuminer", "cpuminer-opt")}
DIFF1 = 0xFFFF << 208


def _messages(session: dict, side: str) -> list[dict]:
    return [json.loads(x["line"]) for x in session["lines"] if x["from"] == side]


@pytest.mark.parametrize("name", list(SESSIONS))
def test_a_recorded_stratum_session_rebuilds_to_the_miners_shares_and_the_stored_blocks(name):
    """Every share the program sent, rebuilt from the notify it answered, the extranonce1 it was
    given and its own submit, by the protocol's conventions (written here, not the server's):
    each meets the difficulty in force, and those that met the block target are the blocks the
    node stored."""
    from support.stratum_miner import build_header, dsha
    session = SESSIONS[name]
    received = _messages(session, "node")
    subscribe = next(m for m in received if m.get("id") == 1)["result"]
    extranonce1, size = subscribe[1], subscribe[2]
    jobs, difficulty, hashes = {}, None, []
    for msg in (json.loads(x["line"]) for x in session["lines"]):
        if msg.get("method") == "mining.set_difficulty":
            difficulty = msg["params"][0]
        elif msg.get("method") == "mining.notify":
            jobs[msg["params"][0]] = msg["params"]
        elif msg.get("method") == "mining.submit":
            worker, job_id, en2, ntime, nonce = msg["params"][:5]
            assert worker == session["worker"] and len(en2) == 2 * size
            header = build_header(jobs[job_id], extranonce1, bytes.fromhex(en2), int(ntime, 16), int(nonce, 16))
            assert int.from_bytes(dsha(header), "little") <= int(DIFF1 / difficulty)
            hashes.append(dsha(header)[::-1].hex())
    assert len(hashes) >= 3 and set(session["blocks"]) <= set(hashes) and len(session["blocks"]) >= 3
    submits = {m["id"] for m in _messages(session, "miner") if m.get("method") == "mining.submit"}
    replies = [m for m in received if m.get("id") in submits]
    assert replies and all(m["result"] is True and m["error"] is None for m in replies)


@pytest.mark.parametrize("name", list(SESSIONS))
def test_a_miner_programs_own_lines_get_the_answers_it_reads(tmp_path, name):
    """Replayed against a live server, byte for byte: every request the program sent before its
    first share gets a reply of the recorded shape, set_difficulty and notify follow, and its
    first submit (a share of the recorded chain, worthless here) gets a refusal it can read."""
    from support.stratum_miner import Miner
    session = SESSIONS[name]
    sent = _messages(session, "miner")
    recorded = {m.get("id"): m for m in _messages(session, "node") if m.get("id") is not None}
    first_submit = next(i for i, m in enumerate(sent) if m.get("method") == "mining.submit")
    with NodeProcess(make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 25), "--stratum-port", "0",
                     "--stratum-difficulty", "0.002") as node:
        m = Miner(node.ready["stratum_port"])
        try:
            lines = [x["line"] for x in session["lines"] if x["from"] == "miner"]
            for request, line in zip(sent[:first_submit], lines):
                m.send_line(line.encode())
                got, want = m.reply(request["id"]), recorded[request["id"]]
                assert _shape(got) == _shape(want), (got, want)
            assert m.wait_for("mining.set_difficulty")["params"] == [0.002]
            notify = m.wait_for("mining.notify")["params"]
            recorded_notify = next(x for x in _messages(session, "node") if x.get("method") == "mining.notify")
            assert _shape(notify) == _shape(recorded_notify["params"])
            m.send_line(lines[first_submit].encode())
            refused = m.reply(sent[first_submit]["id"])
            assert refused["result"] is None and refused["error"][0] in (20, 21, 23)
            assert isinstance(refused["error"][1], str) and refused["error"][2] is None
        finally:
            m.close()


def _shape(value):
    """A JSON value's structure: its types all the way down."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize("name", [_miner_param("cpuminer"), _miner_param("cpuminer-opt")])
def test_miner_programs_mine_a_live_node_over_stratum(tmp_path, name):
    with NodeProcess(make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 22), "--stratum-port", "0",
                     "--stratum-difficulty", "0.0002") as node:
        output = _run_miner(name, ["-o", f"stratum+tcp://127.0.0.1:{node.ready['stratum_port']}",
                                   "-O", "alice.rig1:x"], node, 3)
        assert node.call("getblockcount") >= 3, output[-2000:]
        accepted, refused = _verdicts(name, output)
        assert accepted >= 3 and refused <= {"Job not found (stale)"}, (accepted, refused)
        with Chain.open(node.chain, readonly=True) as chain:
            assert chain.verify() == chain.height


@pytest.mark.parametrize("name", [_miner_param("cpuminer"), _miner_param("cpuminer-opt")])
def test_miner_programs_mine_a_scrypt_node_over_stratum(tmp_path, name):
    """`-a scrypt` against a local-scrypt node's Stratum server: the miner divides the pool's
    difficulty by 65,536 for scrypt, as scrypt pools count it, so the server must count it so
    too and judge shares by scrypt; every share the miner sends is accepted and its blocks
    are stored."""
    with NodeProcess(tmp_path / "chain.sqlite", "--preset", "local-scrypt", "--stratum-port", "0",
                     "--stratum-difficulty", "0.01") as node:
        output = _run_miner(name, ["-o", f"stratum+tcp://127.0.0.1:{node.ready['stratum_port']}",
                                   "-O", "alice.rig1:x"], node, 3, algo="scrypt")
        assert node.call("getblockcount") >= 3, output[-2000:]
        accepted, refused = _verdicts(name, output)
        assert accepted >= 3 and refused <= {"Job not found (stale)"}, (accepted, refused, output[-1500:])
        with Chain.open(node.chain, readonly=True) as chain:
            assert chain.params.pow == "scrypt" and chain.verify() == chain.height


SCRYPT_SESSION = json.loads((ROOT / "tests" / "fixtures" / "cpuminer-scrypt-stratum-session.json").read_text())
SCRYPT_DIFF1 = 0xFFFF << 224  # scrypt pools' difficulty 1: 65,536 times easier than SHA-256d's


def test_a_recorded_scrypt_stratum_session_rebuilds_to_scrypt_shares_and_the_stored_blocks():
    """pooler's cpuminer `-a scrypt` against a local-scrypt node's Stratum server, replayed: each
    share rebuilt from its notify, extranonce1 and submit meets the difficulty in force by
    hashlib's scrypt at scrypt pools' difficulty 1 (the server counted it that way, or the
    program's shares would have been refused), and the node's stored blocks are among them. As
    pools do, a share at the difficulty before a change counts until the next job."""
    import hashlib

    from support.stratum_miner import build_header, dsha
    session = SCRYPT_SESSION
    received = _messages(session, "node")
    subscribe = next(m for m in received if m.get("id") == 1)["result"]
    extranonce1, size = subscribe[1], subscribe[2]
    jobs, difficulty, previous, ids = {}, None, None, []
    for msg in (json.loads(x["line"]) for x in session["lines"]):
        if msg.get("method") == "mining.set_difficulty":
            previous, difficulty = difficulty, msg["params"][0]
        elif msg.get("method") == "mining.notify":
            jobs[msg["params"][0]] = msg["params"]
            previous = None
        elif msg.get("method") == "mining.submit":
            worker, job_id, en2, ntime, nonce = msg["params"][:5]
            assert worker == session["worker"] and len(en2) == 2 * size
            header = build_header(jobs[job_id], extranonce1, bytes.fromhex(en2), int(ntime, 16), int(nonce, 16))
            pow_hash = hashlib.scrypt(header, salt=header, n=1024, r=1, p=1, dklen=32)
            in_force = min(difficulty, previous) if previous else difficulty
            assert int.from_bytes(pow_hash, "little") <= int(SCRYPT_DIFF1 / in_force)
            assert int.from_bytes(dsha(header), "little") > int(DIFF1 / in_force)  # not a sha256d share
            ids.append(dsha(header)[::-1].hex())
    assert len(ids) >= 100 and set(session["blocks"]) <= set(ids) and len(session["blocks"]) >= 3
    sent = [m for m in _messages(session, "miner") if m.get("method") == "mining.submit"]
    replies = [m for m in received if m.get("id") in {m["id"] for m in sent}]  # minerd numbers every submit 4
    assert len(replies) == len(sent) == len(ids) and all(m["result"] is True and m["error"] is None for m in replies)


ALL_SESSIONS = {**SESSIONS, "cpuminer-scrypt": SCRYPT_SESSION}


@pytest.mark.parametrize("name", list(ALL_SESSIONS))
def test_every_recorded_share_is_judged_by_the_servers_own_check(name):
    """Every share a miner program sent in a recorded session, judged by the server's own code:
    its job rebuilt by `StratumJob.from_notify` from the recorded notify, the share by
    `StratumJob.share` from the recorded extranonce1 and submit, the difficulty in force by the
    session's `ShareDifficulty` fed the recorded set_difficulty and notify lines in their order,
    and the verdict by `StratumJob.verdict`. Each share the node accepted is accepted again, and
    the shares it judges blocks are exactly the blocks the node stored (by block id: for scrypt
    the proof-of-work hash is not the id)."""
    from miner.node.stratum.difficulty import ShareDifficulty
    from miner.node.stratum.jobs_and_shares import ShareVerdict, StratumJob
    session = ALL_SESSIONS[name]
    pow = "scrypt" if name.endswith("scrypt") else "sha256d"
    received = _messages(session, "node")
    subscribe = next(m for m in received if m.get("id") == 1)["result"]
    extranonce1, size = bytes.fromhex(subscribe[1]), subscribe[2]
    accepted_ids = {m["id"] for m in received if m.get("result") is True and m.get("error") is None}
    jobs: dict[str, StratumJob] = {}
    rule = ShareDifficulty()
    verdicts: dict[str, str] = {}
    for msg in (json.loads(x["line"]) for x in session["lines"]):
        if msg.get("method") == "mining.set_difficulty":
            rule.announced(msg["params"][0])
        elif msg.get("method") == "mining.notify":
            jobs[msg["params"][0]] = StratumJob.from_notify(msg["params"], size, pow)
            rule.job_sent(msg["params"][0], msg["params"][8])
        elif msg.get("method") == "mining.submit":
            assert msg["id"] in accepted_ids  # every share of these sessions was accepted live
            _, job_id, en2, ntime, nonce = msg["params"][:5]
            job = jobs[job_id]
            share = job.share(extranonce1, bytes.fromhex(en2), int(ntime, 16), int(nonce, 16), job.job.version)
            verdicts[share.header.hash_hex()] = job.verdict(share, rule.for_job(job_id, float("nan")))
    blocks = {h for h, v in verdicts.items() if v is ShareVerdict.BLOCK}
    assert len(verdicts) >= 19 and set(verdicts.values()) == set(ShareVerdict)
    assert blocks == set(session["blocks"]), (name, sorted(blocks), session["blocks"])
