"""pooler's cpuminer mining `miner node` over getblocktemplate, as a new user would run it.

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
from nodeproc import ROOT, NodeProcess, make_chain

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


@pytest.mark.slow
@pytest.mark.skipif(not CPUMINER, reason="no pooler cpuminer here: set CPUMINER=/path/to/minerd (or put minerd "
                                         "on PATH) to have it mine a live node")
def test_cpuminer_mines_a_live_node_over_getblocktemplate(tmp_path):
    with NodeProcess(make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 16)) as node:
        start = 17  # past heights 1-16, which cpuminer's v2.5.1 tag encodes wrongly (BIP 34)
        assert len(node.call("generatetoaddress", start, ADDRESS, 10**9)) == start
        miner = subprocess.Popen([CPUMINER, "-a", "sha256d", "-o", f"http://127.0.0.1:{node.port}",
                                  "-O", node.cookie.read_text(), "--no-getwork", "--no-stratum",
                                  f"--coinbase-addr={ADDRESS}", "-t", "1", "-D"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 90
            while node.call("getblockcount") < start + 3 and time.monotonic() < deadline \
                    and miner.poll() is None:
                time.sleep(0.2)
        finally:
            miner.terminate()
            try:
                output = miner.communicate(timeout=10)[0]
            except subprocess.TimeoutExpired:
                miner.kill()
                output = miner.communicate()[0]
        height = node.call("getblockcount")
        assert height >= start + 3, output[-2000:]
        accepted = len(re.findall(r"accepted: .*\(yay!!!\)", output))
        reasons = re.findall(r"reject reason: (\S+)", output)
        assert accepted >= 3 and set(reasons) <= {"inconclusive"}, (accepted, reasons)  # stale work only
        for h in range(start + 1, height + 1):
            block = Block.parse(bytes.fromhex(node.call("getblock", node.call("getblockhash", h), 0)))
            coinbase = block.txs[0]
            assert coinbase.witnesses == ((bytes(32),),)  # filled in by the node
            assert coinbase.outputs[0].script_pubkey == P2WPKH


# --------------------------------------------------------------------------- Stratum

SESSION = json.loads((ROOT / "tests" / "fixtures" / "cpuminer-stratum-session.json").read_text())
DIFF1 = 0xFFFF << 208


def _messages(side: str) -> list[dict]:
    return [json.loads(x["line"]) for x in SESSION["lines"] if x["from"] == side]


def test_the_recorded_stratum_session_rebuilds_to_cpuminers_shares_and_the_stored_blocks():
    """Every share cpuminer sent, rebuilt from the notify it answered, the extranonce1 it was
    given and its own submit, by the protocol's conventions (written here, not the server's):
    each meets the difficulty in force, and those that met the block target are the blocks the
    node stored."""
    from test_stratum import build_header, dsha
    sent, received = _messages("miner"), _messages("node")
    subscribe = next(m for m in received if m.get("id") == 1)["result"]
    extranonce1, size = subscribe[1], subscribe[2]
    jobs, difficulty, hashes = {}, None, []
    order = [json.loads(x["line"]) for x in SESSION["lines"]]
    for msg in order:
        if msg.get("method") == "mining.set_difficulty":
            difficulty = msg["params"][0]
        elif msg.get("method") == "mining.notify":
            jobs[msg["params"][0]] = msg["params"]
        elif msg.get("method") == "mining.submit":
            worker, job_id, en2, ntime, nonce = msg["params"][:5]
            assert worker == "alice.rig1" and len(en2) == 2 * size
            header = build_header(jobs[job_id], extranonce1, bytes.fromhex(en2), int(ntime, 16), int(nonce, 16))
            value = int.from_bytes(dsha(header), "little")
            assert value <= int(DIFF1 / difficulty)
            hashes.append(dsha(header)[::-1].hex())
    assert len(hashes) == len([m for m in sent if m.get("method") == "mining.submit"]) >= 3
    assert set(SESSION["blocks"]) <= set(hashes)
    replies = [m for m in received if m.get("id") not in (None, 1, 2)]
    assert replies and all(m == {"id": 4, "result": True, "error": None} for m in replies)


def test_cpuminers_own_lines_get_the_answers_it_reads(tmp_path):
    """Replayed against a live server, byte for byte: its subscribe and authorize get replies of
    the recorded shapes, set_difficulty and notify follow, and its submit (a share of the
    recorded chain, worthless here) gets a refusal cpuminer can read."""
    sent = [x["line"] for x in SESSION["lines"] if x["from"] == "miner"]
    recorded = {m.get("id"): m for m in _messages("node") if m.get("id") is not None}
    from test_stratum import Miner
    with NodeProcess(make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 25), "--stratum-port", "0",
                     "--stratum-difficulty", "0.002") as node:
        m = Miner(node.ready["stratum_port"])
        try:
            m.send_line(sent[0].encode())  # mining.subscribe
            sub = m.reply(1)
            shape = recorded[1]["result"]
            assert [[[type(x) for x in pair] for pair in sub["result"][0]], type(sub["result"][1]),
                    sub["result"][2]] == [[[type(x) for x in pair] for pair in shape[0]], type(shape[1]), shape[2]]
            m.send_line(sent[1].encode())  # mining.authorize
            assert m.reply(2) == recorded[2]
            assert m.wait_for("mining.set_difficulty")["params"] == [0.002]
            notify = m.wait_for("mining.notify")["params"]
            recorded_notify = next(m for m in _messages("node") if m.get("method") == "mining.notify")
            assert [type(x) for x in notify] == [type(x) for x in recorded_notify["params"]]
            m.send_line(sent[2].encode())  # a share of another chain's job: refused, in a shape cpuminer reads
            refused = m.reply(4)
            assert refused["result"] is None and refused["error"][0] in (20, 21, 23)
            assert isinstance(refused["error"][1], str) and refused["error"][2] is None
        finally:
            m.close()


@pytest.mark.slow
@pytest.mark.skipif(not CPUMINER, reason="no pooler cpuminer here: set CPUMINER=/path/to/minerd (or put minerd "
                                         "on PATH) to have it mine a live node")
def test_cpuminer_mines_a_live_node_over_stratum(tmp_path):
    with NodeProcess(make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 22), "--stratum-port", "0",
                     "--stratum-difficulty", "0.0002") as node:
        miner = subprocess.Popen([CPUMINER, "-a", "sha256d", "-o", f"stratum+tcp://127.0.0.1:{node.ready['stratum_port']}",
                                  "-O", "alice.rig1:x", "-t", "1", "-D"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 90
            while node.call("getblockcount") < 3 and time.monotonic() < deadline and miner.poll() is None:
                time.sleep(0.2)
        finally:
            miner.terminate()
            try:
                output = miner.communicate(timeout=10)[0]
            except subprocess.TimeoutExpired:
                miner.kill()
                output = miner.communicate()[0]
        assert node.call("getblockcount") >= 3, output[-2000:]
        accepted = len(re.findall(r"accepted: .*\(yay!!!\)", output))
        reasons = set(re.findall(r"reject reason: (.+)", output))
        assert accepted >= 3 and reasons <= {"Job not found (stale)"}, (accepted, reasons)
        with Chain.open(node.chain, readonly=True) as chain:
            assert chain.verify() == chain.height
