"""`miner node` as a real process on 127.0.0.1: JSON-RPC as Core speaks it, blocks in and out
in Bitcoin's wire format, bad requests answered without harm, ownership of the chain file."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
import time

import pytest
from support.nodeproc import ROOT, NodeProcess, make_chain, stored_blocks

from miner.mining.template import block_hex, job_from_template
from miner.mining.work import Solution
from miner.primitives.block import Block
from miner.primitives.compact import bits_to_target
from miner.primitives.header import BlockHeader
from miner.primitives.merkle import merkle_root
from miner.primitives.transaction import Transaction

OP_TRUE = b"\x51"
ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def solve(template: dict, payout: bytes = OP_TRUE, tag: bytes = b"test", valid: bool = True) -> Solution:
    """A solution of the template found with hashlib (valid, or with a hash above the target)."""
    job = job_from_template(template, payout, tag)
    work = job.work(0)
    nonce = next(n for n in range(1 << 20) if work.check(n) == valid)
    return Solution(job, 0, nonce)


def core_template() -> dict:
    """A getblocktemplate result recorded from Bitcoin Core 27.1 (regtest, one transaction)."""
    return json.loads((ROOT / "tests" / "fixtures" / "core-27.1-regtest-template.json").read_text())["template"]


def template(node: NodeProcess) -> dict:
    return node.call("getblocktemplate", {"rules": ["segwit"]})


@pytest.fixture
def node(tmp_path):
    with NodeProcess(make_chain(tmp_path / "chain.sqlite")) as n:
        yield n


# --------------------------------------------------------------------------- protocol

def test_json_rpc_1_and_2_batches_and_notifications_as_core_answers_them(node):
    status, body, _ = node.post('{"method": "getblockcount", "params": [], "id": 7}')
    assert (status, json.loads(body)) == (200, {"result": 0, "error": None, "id": 7})
    status, body, _ = node.post('{"jsonrpc": "2.0", "method": "getblockcount", "id": "a"}')
    assert (status, json.loads(body)) == (200, {"jsonrpc": "2.0", "result": 0, "id": "a"})
    # A 2.0 error is status 200 with no result key; a 1.0 error sets the HTTP status as Core does.
    status, body, _ = node.post('{"jsonrpc": "2.0", "method": "nope", "id": 1}')
    assert status == 200 and json.loads(body) == {
        "jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 1}
    status, body, _ = node.post('{"method": "nope", "id": 1}')
    assert status == 404 and json.loads(body)["error"]["code"] == -32601
    status, body, _ = node.post('{"jsonrpc": "2.0", "method": "getblockcount"}')  # notification
    assert (status, body) == (204, b"")
    status, body, _ = node.post('[{"method": "getblockcount", "id": 1}, '
                                '{"jsonrpc": "2.0", "method": "getblockcount"}, 5, '
                                '{"method": "getblockhash", "params": [0], "id": 2}]')
    replies = json.loads(body)
    assert status == 200 and [r["id"] for r in replies] == [1, None, 2]
    assert replies[1]["error"] == {"code": -32600, "message": "Invalid Request object"}
    assert replies[2]["result"] == node.call("getbestblockhash")
    status, body, _ = node.post("[" + ",".join(['{"method": "getblockcount", "id": 1}'] * 1001) + "]")
    assert status == 400 and json.loads(body)["error"]["code"] == -32600


def test_authentication_cookie_and_401(node, tmp_path):
    cookie = node.cookie.read_text()
    user, password = cookie.split(":")
    assert user == "__cookie__" and len(password) == 64 and int(password, 16) >= 0
    assert stat.S_IMODE(node.cookie.stat().st_mode) == 0o600
    t0 = time.perf_counter()
    status, body, headers = node.post('{"method": "getblockcount"}', auth="Basic X19jb29raWVfXzp4")
    assert status == 401 and time.perf_counter() - t0 >= 0.2
    assert headers.get("WWW-Authenticate") == 'Basic realm="jsonrpc"'
    status, _, _ = node.post("", method="GET")
    assert status == 405
    assert node.stop() == 0
    assert not node.cookie.exists()  # removed on a clean exit, as Core removes .cookie
    assert node.events[-1]["event"] == "stopped"


def test_user_and_password_instead_of_the_cookie(tmp_path):
    path = make_chain(tmp_path / "c.sqlite")
    with NodeProcess(path, "--rpc-user", "alice", "--rpc-password", "s3cret") as node:
        assert not node.cookie.exists()
        import base64
        good = "Basic " + base64.b64encode(b"alice:s3cret").decode()
        assert json.loads(node.post('{"method":"getblockcount","id":1}', auth=good)[1])["result"] == 0
        assert node.post('{"method":"getblockcount","id":1}',
                         auth="Basic " + base64.b64encode(b"alice:wrong").decode())[0] == 401


def test_a_non_loopback_bind_without_credentials_is_refused(tmp_path):
    out = subprocess.run([sys.executable, "-m", "miner", "node", "--chain", str(tmp_path / "c.sqlite"),
                          "--rpc-bind", "0.0.0.0", "--rpc-port", "0"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "not a loopback address" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "c.sqlite").exists()


def test_the_node_owns_its_chain_file(node):
    out = subprocess.run([sys.executable, "-m", "miner", "mine", "--chain", str(node.chain), "--blocks", "1",
                          "--backend", "ref"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and f"--url {node.url}" in out.stderr
    out = subprocess.run([sys.executable, "-m", "miner", "node", "--chain", str(node.chain), "--rpc-port", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "in use by another process" in out.stderr


# --------------------------------------------------------------------------- methods

def test_getblocktemplate_submitblock_and_the_info_methods(node):
    t = template(node)
    core = core_template()  # the same fields, of the same JSON types, as Bitcoin Core's
    assert {k: type(v) for k, v in t.items()} == {k: type(v) for k, v in core.items()}
    assert t["height"] == 1 and t["coinbasevalue"] == 50 * 10**8 and t["curtime"] >= t["mintime"]
    # Core's answer for an empty template: the commitment to a coinbase-only witness tree.
    assert t["default_witness_commitment"] == (
        "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9")
    assert node.call("getblocktemplate")["error"]["code"] == -8  # no segwit rule: Core refuses
    solution = solve(t)
    raw = block_hex(solution)
    assert node.call("submitblock", raw) is None
    assert node.call("submitblock", raw) == "duplicate"
    h = solution.header.hash_hex()
    assert node.call("getblockcount") == 1 and node.call("getbestblockhash") == h
    assert node.call("getblockhash", 1) == h
    header = node.call("getblockheader", h)
    assert header["height"] == 1 and header["confirmations"] == 1 and header["nTx"] == 1
    assert header["previousblockhash"] == t["previousblockhash"] and header["bits"] == t["bits"]
    assert node.call("getblockheader", h, False) == solution.header.hex()
    assert node.call("getblock", h, 0) == raw
    block = node.call("getblock", h)
    assert block["tx"] == [header["merkleroot"]] and block["size"] == len(raw) // 2
    assert node.call("getblock", "00" * 32)["error"] == {"code": -5, "message": "Block not found"}
    assert node.call("getblockhash", 2)["error"] == {"code": -8, "message": "Block height out of range"}
    info = node.call("getblockchaininfo")
    assert info["blocks"] == 1 and info["bestblockhash"] == h and info["chain"] == "test-node"
    mining = node.call("getmininginfo")
    assert mining["blocks"] == 1 and mining["pooledtx"] == 0 and mining["networkhashps"] >= 0
    assert node.call("getdifficulty") == header["difficulty"]
    assert [e["hash"] for e in node.events if e["event"] == "block"] == [h]


def test_block_proposals_are_judged_without_their_proof_of_work_and_never_stored(node):
    """BIP 23 proposals, as Core's getblocktemplate answers them: every rule but proof of work
    on the active tip, Core's reasons, and nothing stored."""
    def propose(data):
        return node.call("getblocktemplate", {"mode": "proposal", "data": data})

    first = template(node)
    assert first["capabilities"] == ["proposal"]
    unmined = block_hex(solve(first, valid=False))
    before = stored_blocks(node.chain)
    assert propose(unmined) is None
    assert node.call("submitblock", unmined) == "high-hash"  # the same block, judged with its work

    raw = bytearray.fromhex(unmined)
    raw[36] ^= 1  # one bit of the merkle root
    assert propose(raw.hex()) == "bad-txnmrklroot"
    raw = bytearray.fromhex(unmined)
    raw[72] ^= 1  # one bit of nBits
    assert propose(raw.hex()) == "bad-diffbits"
    assert propose("zz")["error"] == {"code": -22, "message": "Block decode failed"}
    assert node.call("getblocktemplate", {"mode": "proposal"})["error"] == {
        "code": -3, "message": "Missing data String key for proposal"}
    assert node.call("getblocktemplate", {"mode": "mine"})["error"] == {"code": -8, "message": "Invalid mode"}
    assert stored_blocks(node.chain) == before

    mined = block_hex(solve(first))
    assert node.call("submitblock", mined) is None
    assert propose(mined) == "duplicate"
    assert propose(unmined) == "inconclusive-not-best-prevblk"  # its parent is no longer the tip
    assert propose(block_hex(solve(template(node), valid=False))) is None
    assert node.call("getblockcount") == 1


def test_generatetoaddress_mines_with_the_nodes_backend(node):
    hashes = node.call("generatetoaddress", 3, "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
    assert len(hashes) == 3 and node.call("getbestblockhash") == hashes[-1]
    coinbase = bytes.fromhex(node.call("getblock", hashes[0], 0))[81:]
    assert bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6") in coinbase  # pays the address
    assert node.call("generatetoaddress", 1, "not-an-address")["error"] == {
        "code": -5, "message": "Error: Invalid address"}


def test_a_long_poll_returns_when_the_tip_changes(node):
    t = template(node)
    got: dict = {}

    def poll():
        got["template"] = node.call("getblocktemplate", {"rules": ["segwit"], "longpollid": t["longpollid"]},
                                    timeout=60)
        got["at"] = time.perf_counter()

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    assert "template" not in got  # still waiting: nothing changed
    t0 = time.perf_counter()
    assert node.call("submitblock", block_hex(solve(t))) is None
    waiter.join(10)
    assert got["template"]["height"] == 2 and got["at"] - t0 < 2


# --------------------------------------------------------------------------- bad requests

def test_bad_requests_get_cores_answers_and_change_nothing(node):
    good = solve(template(node))
    assert node.call("submitblock", block_hex(good)) is None
    before = stored_blocks(node.chain)
    t = template(node)

    def block_with(**change) -> str:
        s = solve(t)
        h = s.header
        fields = dict(version=h.version, prev_hash=h.prev_hash, merkle_root=h.merkle_root, time=h.time,
                      bits=h.bits, nonce=h.nonce)
        fields.update(change)
        header = BlockHeader(**fields)
        if "nonce" not in change:  # re-solve so only the changed rule is broken
            target = bits_to_target(header.bits)
            header = next(header.with_nonce(n) for n in range(1 << 22) if header.with_nonce(n).meets_target(target))
        return header.hex() + block_hex(s)[160:]

    cases = {
        "bad merkle root": (block_with(merkle_root=bytes(32)), "bad-txnmrklroot"),
        "wrong bits": (block_with(bits=0x1F7FFFFF), "bad-diffbits"),
        "unknown parent": (block_with(prev_hash=b"\x11" * 32), "prev-blk-not-found"),
        "above the target": (block_hex(solve(t, valid=False)), "high-hash"),
        "duplicate": (block_hex(good), "duplicate"),
        "time too old": (block_with(time=t["mintime"] - 1), "time-too-old"),
    }
    for name, (raw, verdict) in cases.items():
        assert node.call("submitblock", raw) == verdict, name
    errors = {
        ("submitblock", "xyz"): (-22, "Block decode failed"),
        ("submitblock", "00" * 81): (-22, "Block does not start with a coinbase"),  # no transactions
        ("submitblock", "00" * 83): (-22, "Block decode failed"),  # bytes after the last one
        ("sendrawtransaction", "0100"): (-22, "TX decode failed. Make sure the tx has at least one input."),
        ("sendrawtransaction", "zz"): (-22, "TX decode failed. Make sure the tx has at least one input."),
        ("getblockhash", "1"): (-3, None),
        ("getblockhash",): (-1, None),
        ("getblockcount", 1, 2): (-1, None),
        ("getblockheader", "abc"): (-8, "hash must be of length 64 (not 3, for 'abc')"),
    }
    for (method, *params), (code, message) in errors.items():
        reply = node.call(method, *params)
        assert reply["error"]["code"] == code, (method, params, reply)
        if message:
            assert reply["error"]["message"] == message
    status, body, _ = node.post("{not json")
    assert status == 500 and json.loads(body) == {
        "result": None, "error": {"code": -32700, "message": "Parse error"}, "id": None}
    status, body, _ = node.post('"a string"')
    assert status == 400
    status, _, _ = node.post(b"[" + b" " * (100 * 1024 * 1024) + b"]")
    assert status == 413
    assert node.call("getblockcount") == 1  # still serving
    assert stored_blocks(node.chain) == before


def test_a_transaction_goes_through_the_mempool_into_a_block(node):
    from bitcoin.core import (
        CMutableTransaction,
        COutPoint,
        CTxIn,
        CTxInWitness,
        CTxOut,
        CTxWitness,
        lx,
    )
    from bitcoin.core.script import CScript, CScriptWitness
    tx = CMutableTransaction([CTxIn(COutPoint(lx("11" * 32), 0), nSequence=0xFFFFFFFD)],
                             [CTxOut(12345, CScript(bytes.fromhex("0014" + "22" * 20)))],
                             witness=CTxWitness([CTxInWitness(CScriptWitness([b"\x30" * 71, b"\x02" * 33]))]))
    raw = tx.serialize()
    assert raw[4:6] == b"\x00\x01"  # segwit serialization
    txid = node.call("sendrawtransaction", raw.hex())
    assert txid == tx.GetTxid()[::-1].hex()
    assert node.call("getrawmempool") == [txid]
    t = template(node)
    assert [e["txid"] for e in t["transactions"]] == [txid]
    assert {k: type(v) for k, v in t["transactions"][0].items()} == {
        k: type(v) for k, v in core_template()["transactions"][0].items()}
    assert t["transactions"][0]["hash"] == tx.GetHash()[::-1].hex()  # wtxid
    hashes = node.call("generatetoaddress", 1, "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
    assert node.call("getblock", hashes[0])["tx"][1] == txid
    assert node.call("getrawmempool") == []
    assert node.call("sendrawtransaction", raw[:-1].hex())["error"]["code"] == -22


# --------------------------------------------------------------------------- an independent library

def test_python_bitcoinlib_reads_our_blocks_and_we_accept_its_blocks(tmp_path):
    import bitcoin
    import bitcoin.rpc
    from bitcoin.core import (
        CBlock,
        CBlockHeader,
        CheckBlock,
        CMutableTransaction,
        COutPoint,
        CTxIn,
        CTxOut,
        b2lx,
        lx,
    )
    from bitcoin.core.script import CScript
    bitcoin.SelectParams("regtest")
    (tmp_path / "regtest").mkdir()
    path = make_chain(tmp_path / "chain.sqlite")
    with NodeProcess(path, "--rpc-cookie-file", str(tmp_path / "regtest" / ".cookie")) as node:
        node.cookie = tmp_path / "regtest" / ".cookie"
        conf = tmp_path / "bitcoin.conf"
        conf.write_text(f"rpcport={node.port}\nrpcconnect=127.0.0.1\ndatadir={tmp_path}\n")
        proxy = bitcoin.rpc.Proxy(btc_conf_file=str(conf))  # reads regtest/.cookie, as for Core
        node.call("generatetoaddress", 2, "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
        assert proxy.getblockcount() == 2
        for height in (1, 2):
            block_hash = proxy.getblockhash(height)
            block = proxy.getblock(block_hash)
            assert block.GetHash() == block_hash
            assert block.calc_merkle_root() == block.hashMerkleRoot
            CheckBlock(block, cur_time=int(time.time()))
        # A block bitcoinlib builds and serializes on our tip.
        t = template(node)
        coinbase = CMutableTransaction(
            [CTxIn(COutPoint(), CScript([t["height"], b"bitcoinlib"]))],
            [CTxOut(t["coinbasevalue"], CScript([1]))])
        header = CBlockHeader(nVersion=t["version"], hashPrevBlock=lx(t["previousblockhash"]),
                              nTime=t["curtime"], nBits=int(t["bits"], 16))
        block = CBlock(header.nVersion, header.hashPrevBlock, b"\x00" * 32, header.nTime, header.nBits, 0,
                       vtx=[coinbase])
        root = block.calc_merkle_root()
        target = int(t["target"], 16)
        nonce = 0
        while True:
            block = CBlock(header.nVersion, header.hashPrevBlock, root, header.nTime, header.nBits, nonce,
                           vtx=[coinbase])
            if int.from_bytes(block.GetHash(), "little") <= target:
                break
            nonce += 1
        proxy.submitblock(block)  # raises unless the answer is null (accepted)
        assert proxy.getbestblockhash() == block.GetHash()
        assert node.call("getbestblockhash") == b2lx(block.GetHash())


# --------------------------------------------------------------------------- durability

def test_sigkill_during_a_submitblock_storm_loses_no_accepted_block(tmp_path):
    """Blocks built ahead (a chain of 400), submitted in order by four clients at once; the node
    is killed mid-storm. Every block it answered null for must be stored and active."""
    from miner.chain.chain import Chain
    path = make_chain(tmp_path / "chain.sqlite")
    shadow = tmp_path / "shadow.sqlite"
    import shutil
    shutil.copy(path, shadow)
    blocks = []
    with Chain.open(shadow) as chain:
        from miner.mining.sources.local import LocalChainSource
        source = LocalChainSource(chain, clock=lambda: chain.params.genesis_time + chain.height + 1)
        for _ in range(400):
            job = source.job()
            work = job.work(0)
            nonce = next(n for n in range(1 << 20) if work.check(n))
            block = job.block(0, nonce)
            chain.append(block, now=int(time.time()))
            blocks.append((block.header.hash_hex(), block.serialize().hex()))
    node = NodeProcess(path)
    accepted: list[str] = []
    lock = threading.Lock()
    nxt = [0]

    def client():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(blocks):
                return
            try:
                verdict = "prev-blk-not-found"
                while verdict == "prev-blk-not-found":  # its parent is still on its way
                    verdict = node.call("submitblock", blocks[i][1], timeout=10)
                if verdict is None:
                    with lock:
                        accepted.append(blocks[i][0])
            except OSError:
                return  # the node is gone

    clients = [threading.Thread(target=client) for _ in range(4)]
    try:
        for c in clients:
            c.start()
        deadline = time.monotonic() + 120
        while len(accepted) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        node.stop(signal_kill())  # stopped here whatever happened above
        for c in clients:
            c.join(30)
    assert 50 <= len(accepted) < len(blocks)
    with Chain.open(path) as chain:
        active = {chain.tree.active[h][::-1].hex() for h in range(chain.height + 1)}
        assert set(accepted) <= active
        assert chain.verify() == chain.height


def signal_kill() -> int:
    import signal
    return signal.SIGKILL


# --------------------------------------------------------------------------- miners on one node

def test_two_miners_mine_one_node_and_never_stay_on_a_stale_tip(tmp_path):
    """Two `miner mine --url` processes (hashlib backend) mine 10 blocks between them. The node's
    chain verifies and its active chain is exactly the blocks they report as accepted; every
    time the tip moves, each miner running has the new tip's work within the long poll's round
    trip (measured: the node's commit time to the miner's job event)."""
    from miner.chain.chain import Chain
    path = make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 17)  # ~0.2 s a block here
    with NodeProcess(path) as node:
        miners = [subprocess.Popen(
            [sys.executable, "-m", "miner", "mine", "--url", node.url, "--rpc-cookie-file", str(node.cookie),
             "--backend", "ref", "--blocks", "5", "--json", "--unit-seconds", "0.05"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            outputs = [m.communicate(timeout=300) for m in miners]
        finally:
            for m in miners:  # a hung or failed miner is not left behind
                if m.poll() is None:
                    m.kill()
                    m.wait()
        assert [m.returncode for m in miners] == [0, 0], [o[1][-2000:] for o in outputs]
        events = [[json.loads(line) for line in out.splitlines()] for out, _ in outputs]
        node_blocks = [e for e in node.events if e["event"] == "block"]
    accepted = [e["hash_hex"] for ev in events for e in ev if e["event"] == "block" and e["verdict"] == "accepted"]
    assert len(accepted) == 10 == len(set(accepted))
    with Chain.open(path, readonly=True) as chain:
        assert chain.verify() == 10
        assert {chain.tree.active[h][::-1].hex() for h in range(1, 11)} == set(accepted)
    # Staleness: for each tip the node committed while a miner was still running, the time until
    # that miner's first job on it.
    delays = []
    for ev in events:
        jobs = [e for e in ev if e["event"] == "job"]
        last = jobs[-1]["at"]
        for b in node_blocks:
            if b["at"] >= last:
                continue  # this miner had finished before that block
            first = next(j["at"] for j in jobs if j["prev"] == b["hash"])
            delays.append(first - b["at"])
    delays.sort()
    print(f"\nnew tip to new work: median {1000 * delays[len(delays) // 2]:.1f} ms, "
          f"max {1000 * delays[-1]:.1f} ms over {len(delays)} tip changes")
    assert delays and delays[-1] < 1.0


# --------------------------------------------------------------------------- fuzz

def test_random_bodies_and_block_bytes_never_hurt_a_live_node(tmp_path):
    """Bounded (300 examples, fixed seed): random bodies, random JSON-RPC requests and random
    mutations of a block are answered (never a 5xx other than Core's 500 with a JSON error, never
    a dropped server), and the chain stays as it was. The chain is hard enough (2^24 hashes a
    block) that no mutation can be a valid block by luck."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    path = make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 24)
    with NodeProcess(path) as node:
        base = bytes.fromhex(block_hex(solve(template(node), valid=False)))
        before = stored_blocks(path)
        json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                                   | st.text(max_size=20), lambda c: st.lists(c, max_size=4)
                                   | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=10)
        methods = st.sampled_from(["submitblock", "getblocktemplate", "getblock", "getblockheader",
                                   "getblockhash", "sendrawtransaction", "getrawmempool", "nosuch",
                                   "getnetworkhashps", "generatetoaddress"])
        requests = st.builds(lambda m, p, i: json.dumps({"method": m, "params": p, "id": i}).encode(),
                             methods, st.lists(json_values, max_size=3), json_values)
        mutations = st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)),
                             min_size=1, max_size=8).map(
            lambda edits: json.dumps({"method": "submitblock", "id": 1, "params": [
                bytes(_apply(base, edits)).hex()]}).encode())
        bodies = st.one_of(st.binary(max_size=600), requests, mutations,
                           st.binary(max_size=300).map(lambda b: json.dumps(
                               {"method": "submitblock", "params": [b.hex()], "id": 1}).encode()))

        @settings(max_examples=300, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(bodies)
        def throw(body):
            status, reply, _ = node.post(body, timeout=30)
            assert status in (200, 204, 400, 404, 500), status
            if status != 204:
                parsed = json.loads(reply)
                assert isinstance(parsed, (dict, list))

        throw()
        assert node.call("getblockcount") == 0
        assert node.proc.poll() is None
    assert stored_blocks(path) == before


def _apply(data: bytes, edits) -> bytearray:
    out = bytearray(data)
    for pos, value in edits:
        out[pos] = value
    return out


def test_the_load_benchmark_runs_and_every_request_succeeds():
    """bench/rpc_load.py, small and short: the figures in docs/benchmarks/load.md come from this code."""
    from miner.bench.rpc_load import run
    result = run(clients=5, seconds=0.3, runs=1, blocks_per_client=20)
    for method in ("getblocktemplate", "submitblock"):
        r = result["methods"][method]
        assert r["requests"] > 0 and r["errors"] == 0 and r["p99_ms"] >= r["p50_ms"] > 0


def test_getmininginfo_gives_the_tips_figures_and_the_next_blocks_under_next(node):
    assert len(node.call("generatetoaddress", 2, ADDRESS)) == 2
    info = node.call("getmininginfo")
    tip = node.call("getblockheader", node.call("getbestblockhash"))
    template = node.call("getblocktemplate", {"rules": ["segwit"]})
    assert (info["blocks"], info["bits"], info["target"], info["difficulty"]) == \
        (2, tip["bits"], tip["target"], tip["difficulty"])
    assert info["next"]["height"] == 3 == template["height"]
    assert (info["next"]["bits"], info["next"]["target"]) == (template["bits"], template["target"])


def test_generatetoaddress_500_on_regtest_within_cores_default_maxtries(node):
    """Core counts `maxtries` (1,000,000 by default) one failed nonce at a time across the call,
    so on regtest's bits (half of all nonces are hits) `generatetoaddress 500` mines all 500.
    Charged a whole unit of 4,096 nonces a block, the node stopped at 245."""
    hashes = node.call("generatetoaddress", 500, ADDRESS, timeout=120)
    assert isinstance(hashes, list) and len(hashes) == 500 == len(set(hashes))
    assert node.call("getblockcount") == 500 and node.call("getbestblockhash") == hashes[-1]


def test_generatetoaddress_returns_what_it_found_when_maxtries_runs_out(tmp_path):
    """A block here takes about 1,024 hashes: 20,000 tries find some 20 blocks of the 500 asked,
    and the answer is those blocks, no error, as Core's; 0 tries find none and answer []. The
    node's log says why it stopped short."""
    with NodeProcess(make_chain(tmp_path / "harder.sqlite", hashes_per_block=1 << 10)) as harder:
        found = harder.call("generatetoaddress", 500, ADDRESS, 20_000)
        assert isinstance(found, list) and 0 < len(found) < 500, found
        assert harder.call("getblockcount") == len(found) and harder.call("getbestblockhash") == found[-1]
        assert harder.call("generatetoaddress", 1, ADDRESS, 0) == []
        assert harder.call("getblockcount") == len(found)
        assert harder.stop() == 0
        log = harder.proc.stderr.read()
    assert "maxtries (20,000) ran out after" in log and "of 500 blocks" in log, log


def test_submitblock_fills_in_the_witness_reserved_value_as_core_does(node):
    """cpuminer and cpuminer-opt put the template's witness commitment in the coinbase and submit
    the coinbase without a witness; Core's submitblock adds the 32-byte zero reserved value
    (UpdateUncommittedBlockStructures). Only then: a wrong witness stays wrong, a proposal is
    judged as sent, and a block without a commitment is stored as it came."""

    def legacy_coinbase_block(solution: Solution) -> Block:
        job = solution.job
        coinbase = Transaction.parse(job.coinbase_tx(solution.extranonce))
        assert not coinbase.has_witness
        return Block(job.header(solution.extranonce, solution.nonce), (coinbase, *job.extra_txs))

    t = template(node)
    assert t["default_witness_commitment"]
    s = solve(t, tag=b"cpuminer-like")
    legacy = legacy_coinbase_block(s)
    proposal = node.call("getblocktemplate", {"mode": "proposal", "data": legacy.serialize().hex()})
    assert proposal == "bad-witness-nonce-size"  # Core's proposal check does not fill it in either
    wrong = Block(legacy.header, (Transaction.parse(Transaction(
        legacy.txs[0].version, legacy.txs[0].inputs, legacy.txs[0].outputs, ((bytes(31),),),
        legacy.txs[0].locktime, b"").serialize()), *legacy.txs[1:]))
    assert node.call("submitblock", wrong.serialize().hex()) == "bad-witness-nonce-size"
    assert node.call("submitblock", legacy.serialize().hex()) is None
    stored = node.call("getblock", node.call("getbestblockhash"), 0)
    assert stored == s.block().serialize().hex()  # as a miner that sends the witness would have sent it
    assert bytes.fromhex(stored) != legacy.serialize()

    no_commitment = solve(template(node), tag=b"no commitment")
    plain = legacy_coinbase_block(no_commitment)
    coinbase = plain.txs[0]
    outputs = tuple(o for o in coinbase.outputs if not o.script_pubkey.startswith(bytes.fromhex("6a24aa21a9ed")))
    assert len(outputs) == len(coinbase.outputs) - 1
    bare = Transaction.parse(Transaction(coinbase.version, coinbase.inputs, outputs, (), coinbase.locktime,
                                         b"").serialize())
    job = no_commitment.job
    header = job.header(no_commitment.extranonce, 0)
    header = BlockHeader(header.version, header.prev_hash, merkle_root([bare.txid]), header.time,
                         header.bits, 0)
    target = bits_to_target(header.bits)
    header = next(header.with_nonce(n) for n in range(1 << 20) if header.with_nonce(n).meets_target(target))
    block = Block(header, (bare,))
    assert node.call("submitblock", block.serialize().hex()) is None
    assert node.call("getblock", node.call("getbestblockhash"), 0) == block.serialize().hex()


def test_getblock_verbosity_2_decodes_inputs_and_outputs_as_core_does(node):
    """Issue 33: `getblock HASH 2` gave each transaction's ids, sizes and hex but not `vin` and
    `vout`, which Core includes. A transaction with an input spending as P2PKH does (a DER
    signature and a key), a segwit input, and one output of every kind Core names: field names
    and order as Core's TxToUniv, addresses as python-bitcoinlib and the BIPs' vectors have them,
    `raw(deadbeef)#89f8spxm` as BIP 380's vector."""
    from bitcoin import SelectParams
    from bitcoin.core import CMutableTransaction, COutPoint, CTxIn, CTxInWitness, CTxOut, CTxWitness, lx
    from bitcoin.core.script import CScript, CScriptWitness
    from bitcoin.wallet import CBitcoinAddress
    SelectParams("regtest")
    key, key2 = bytes.fromhex("02" + "79be667e" * 8), bytes.fromhex("03" + "c6047f94" * 8)
    der = bytes.fromhex("3044" + "0220" + "11" * 32 + "0220" + "22" * 32)
    wpkh = "751e76e8199196d454941c45d1b3a323f1433bd6"  # BIP 173's example program
    outputs = {  # script hex: (type, address, asm)
        "76a914" + "33" * 20 + "88ac": ("pubkeyhash", "bitcoinlib",
                                       f"OP_DUP OP_HASH160 {'33' * 20} OP_EQUALVERIFY OP_CHECKSIG"),
        "a914" + "44" * 20 + "87": ("scripthash", "bitcoinlib", f"OP_HASH160 {'44' * 20} OP_EQUAL"),
        "0014" + wpkh: ("witness_v0_keyhash", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", f"0 {wpkh}"),
        "0020" + "55" * 32: ("witness_v0_scripthash", "bitcoinlib", f"0 {'55' * 32}"),
        "5120" + "66" * 32: ("witness_v1_taproot", "bcrt1p", f"1 {'66' * 32}"),
        "51024e73": ("anchor", "bcrt1pfeesnyr2tx", "1 29518"),
        "6a04deadbeef": ("nulldata", None, "OP_RETURN -1874767326"),
        "21" + key.hex() + "ac": ("pubkey", None, f"{key.hex()} OP_CHECKSIG"),
        "5121" + key.hex() + "21" + key2.hex() + "52ae": ("multisig", None,
                                                          f"1 {key.hex()} {key2.hex()} 2 OP_CHECKMULTISIG"),
        "deadbeef": ("nonstandard", None, "OP_UNKNOWN OP_CHECKSIGVERIFY OP_UNKNOWN OP_UNKNOWN"),
    }
    tx = CMutableTransaction(
        [CTxIn(COutPoint(lx("11" * 32), 3), CScript([der + b"\x01", key]), nSequence=0xFFFFFFFE),
         CTxIn(COutPoint(lx("12" * 32), 0), nSequence=0xFFFFFFFD)],
        [CTxOut(50_000_000 + i, CScript(bytes.fromhex(s))) for i, s in enumerate(outputs)],
        witness=CTxWitness([CTxInWitness(CScriptWitness([])), CTxInWitness(CScriptWitness([b"\x30" * 71, key]))]))
    txid = node.call("sendrawtransaction", tx.serialize().hex())
    (block_hash,) = node.call("generatetoaddress", 1, "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
    coinbase, decoded = node.call("getblock", block_hash, 2)["tx"]
    assert list(decoded) == ["txid", "hash", "version", "size", "vsize", "weight", "locktime", "vin", "vout", "hex"]
    assert decoded["txid"] == txid and decoded["hex"] == tx.serialize().hex() and decoded["version"] == 1
    first, second = decoded["vin"]
    assert first == {"txid": "11" * 32, "vout": 3, "scriptSig": {
        "asm": f"{der.hex()}[ALL] {key.hex()}", "hex": CScript([der + b"\x01", key]).hex()}, "sequence": 0xFFFFFFFE}
    assert second == {"txid": "12" * 32, "vout": 0, "scriptSig": {"asm": "", "hex": ""},
                      "txinwitness": ["30" * 71, key.hex()], "sequence": 0xFFFFFFFD}
    for n, (out, (script, (kind, address, text))) in enumerate(zip(decoded["vout"], outputs.items())):
        assert out["value"] == (50_000_000 + n) / 1e8 and out["n"] == n
        spk = out["scriptPubKey"]
        assert list(spk) == ["asm", "desc", "hex", *(["address"] if address else []), "type"], spk
        assert (spk["asm"], spk["hex"], spk["type"]) == (text, script, kind)
        if address == "bitcoinlib":
            address = str(CBitcoinAddress.from_scriptPubKey(CScript(bytes.fromhex(script))))
        if address:
            assert spk["address"].startswith(address), (kind, spk)
        assert spk["desc"].split("#")[0] == {
            "pubkey": f"pk({key.hex()})", "multisig": f"multi(1,{key.hex()},{key2.hex()})",
            "witness_v1_taproot": f"rawtr({'66' * 32})", "nulldata": "raw(6a04deadbeef)",
            "nonstandard": "raw(deadbeef)"}.get(kind, f"addr({spk.get('address')})"), spk
    assert decoded["vout"][-1]["scriptPubKey"]["desc"] == "raw(deadbeef)#89f8spxm"
    assert list(coinbase["vin"][0]) == ["coinbase", "txinwitness", "sequence"]
    assert coinbase["vin"][0]["txinwitness"] == ["00" * 32]  # the witness reserved value
    assert coinbase["vout"][0]["scriptPubKey"]["address"] == "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def test_mining_a_node_names_its_url_once_on_the_start_line(tmp_path):
    """The start line said "mining 1 block on http://... (node at http://..., tip 0)"."""
    with NodeProcess(make_chain(tmp_path / "chain.sqlite")) as node:
        proc = subprocess.run([sys.executable, "-m", "miner", "mine", "--url", node.url, "--rpc-cookie-file",
                               str(node.cookie), "--backend", "ref", "--blocks", "1"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    start = proc.stdout.splitlines()[0]
    assert start.startswith("mining 1 block(s) on http://127.0.0.1:") and "tip 0" in start, start
    assert start.count("127.0.0.1") == 1, start
