"""Nodes as real processes on 127.0.0.1 that find each other's blocks over Bitcoin's peer-to-peer
protocol: sync, relay, a reorganisation to the most-work branch, a node killed mid-sync, the
network RPCs, and peers that misbehave. Every node is on Core's regtest chain (`regtest-core`),
so each one's own chain file shares genesis without copying, and every process is stopped by
the test that started it, also on failure."""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.blockmaker import grow, make_block
from support.nodeproc import NodeProcess, stored_blocks
from support.p2p_nodes import ADDRESS, node, nodes, target, tip, wait_for
from support.p2p_peer import ScriptedPeer

from miner.chain.chain import Chain
from miner.consensus.params import preset
from miner.primitives import p2p
from miner.primitives.header import BlockHeader


@pytest.fixture(scope="module")
def long_chain(tmp_path_factory) -> Path:
    """A regtest-core chain of 2,500 blocks, made in-process (more than one headers message)."""
    path = tmp_path_factory.mktemp("long") / "chain.sqlite"
    with Chain.create(path, preset("regtest-core", 0)) as chain:
        grow(chain, chain.tip_hash, 2500, 1, b"long")
    return path


def test_three_nodes_in_a_line_converge_and_relay_both_ways(tmp_path):
    a = node(tmp_path, "a")
    with nodes(a):
        b = node(tmp_path, "b", "--connect", target(a))
        with nodes(b):
            c = node(tmp_path, "c", "--connect", target(b))
            with nodes(c):
                wait_for(lambda: a.call("getconnectioncount") == 1 and c.call("getconnectioncount") == 1,
                         what="the line a-b-c")
                mined = a.call("generatetoaddress", 30, ADDRESS)
                assert len(mined) == 30
                wait_for(lambda: tip(c) == (30, mined[-1]), what="c at a's tip")
                more = c.call("generatetoaddress", 5, ADDRESS)  # and back the other way
                wait_for(lambda: tip(a) == (35, more[-1]), what="a at c's tip")
                assert tip(b) == (35, more[-1])
                peers = b.call("getpeerinfo")
                assert sorted(p["inbound"] for p in peers) == [False, True]
                for p in peers:
                    assert p["version"] == 70016 and p["subver"].startswith("/pow-miner:")
                    assert p["bytesrecv_per_msg"]["headers"] > 0
                    assert p["connection_type"] == ("inbound" if p["inbound"] else "manual")
                    # what each peer told b it has: a the 30 it mined, c all 35
                    assert p["synced_headers"] == (35 if p["inbound"] else 30)
                c_line = [e for e in c.events if e.get("event") == "peer" and e.get("status") == "connected"]
                assert c_line and c_line[0]["addr"] == target(b)


def test_a_partition_heals_to_the_most_work_branch_and_keeps_the_loser(tmp_path):
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    with nodes(a, b):
        ours = a.call("generatetoaddress", 5, ADDRESS)
        theirs = b.call("generatetoaddress", 8, ADDRESS)
        assert a.call("addnode", target(b), "add") is None
        wait_for(lambda: tip(a) == (8, theirs[-1]), what="a on b's longer branch")
        tips = {t["hash"]: t for t in a.call("getchaintips")}
        assert tips[ours[-1]]["status"] == "valid-fork" and tips[ours[-1]]["branchlen"] == 5
        assert tips[theirs[-1]]["status"] == "active"
        # b heard of a's branch by its headers and, as Core does, does not fetch a branch with
        # less work: getchaintips shows it as headers-only. A new block on either side now
        # reaches the other.
        b_tips = wait_for(lambda: {t["hash"]: t for t in b.call("getchaintips") if t["hash"] == ours[-1]},
                          what="b knows a's branch")
        assert b_tips[ours[-1]] == {"height": 5, "hash": ours[-1], "branchlen": 5, "status": "headers-only"}
        new = a.call("generatetoaddress", 1, ADDRESS)
        wait_for(lambda: tip(b) == (9, new[0]), what="b at a's new block")


def test_a_new_node_syncs_a_long_chain_and_a_sigkill_mid_sync_loses_nothing(tmp_path, long_chain):
    shutil.copy(long_chain, (tmp_path / "a").mkdir() or tmp_path / "a" / "chain.sqlite")
    a = node(tmp_path, "a")
    with nodes(a):
        assert tip(a)[0] == 2500
        b = node(tmp_path, "b", "--connect", target(a))
        try:
            reached = wait_for(lambda: (h := tip(b)[0]) >= 300 and h, within=60, what="b part-way")
            assert b.stop(signal.SIGKILL) == -signal.SIGKILL
            assert reached < 2500, "the kill came after the sync ended"
        finally:
            b.stop()
        kept = Chain.open(tmp_path / "b" / "chain.sqlite", readonly=True)
        try:
            assert kept.height >= reached  # every block it had is still there, the file sound
            assert kept.verify() == kept.height
        finally:
            kept.close()
        b = node(tmp_path, "b", "--connect", target(a))
        with nodes(b):
            wait_for(lambda: tip(b) == tip(a), within=120, what="b caught up after the kill")
            peer = b.call("getpeerinfo")[0]
            assert peer["bytesrecv_per_msg"]["block"] > 0 and peer["inflight"] == []


def test_network_rpcs_answer_as_core_does(tmp_path):
    a = node(tmp_path, "a")
    quiet = NodeProcess((tmp_path / "q").mkdir() or tmp_path / "q" / "chain.sqlite", "--preset", "regtest-core")
    with nodes(a, quiet):
        assert quiet.call("getpeerinfo") == [] and quiet.call("getconnectioncount") == 0
        assert quiet.call("addnode", target(a), "add")["error"]["code"] == -31  # RPC_CLIENT_P2P_DISABLED
        info = a.call("getnetworkinfo")
        assert info["protocolversion"] == 70016 and info["localservices"] == "0000000000000009"
        assert info["connections"] == 0 and info["networkactive"] is True
        assert a.call("addnode", "127.0.0.1:1", "add") is None
        assert a.call("addnode", "127.0.0.1:1", "add")["error"]["code"] == -23
        assert a.call("addnode", "127.0.0.1:2", "remove")["error"]["code"] == -24
        assert a.call("addnode", "127.0.0.1:1", "remove") is None
        assert a.call("addnode", "127.0.0.1:1", "bogus")["error"]["code"] == -8
        assert a.call("disconnectnode", "127.0.0.1:9")["error"]["code"] == -29
        assert a.call("setban", "not-an-ip", "add")["error"]["code"] == -30
        assert a.call("setban", "10.0.0.0/8", "remove")["error"]["code"] == -30
        assert a.call("setban", "10.1.2.3", "add", 600) is None
        assert a.call("setban", "10.1.2.3", "add")["error"]["code"] == -23
        listed = a.call("listbanned")
        assert [b["address"] for b in listed] == ["10.1.2.3/32"] and listed[0]["ban_duration"] == 600
        with ScriptedPeer(a.ready["p2p_port"]) as peer:
            peer.handshake()
            conn = wait_for(lambda: a.call("getpeerinfo"), what="the scripted peer listed")
            assert conn[0]["subver"] == "/scripted-peer:1/" and conn[0]["inbound"] is True
            assert a.call("disconnectnode", "", conn[0]["id"]) is None
            assert peer.closed_by_node()
    # bans outlive a restart (kept beside the chain file, as Core keeps banlist.json)
    a = NodeProcess(tmp_path / "a" / "chain.sqlite", "--listen", "0")
    with nodes(a):
        assert [b["address"] for b in a.call("listbanned")] == ["10.1.2.3/32"]
        assert a.call("clearbanned") is None and a.call("listbanned") == []


MAGIC = bytes.fromhex("fabfb5da")
HARD = 0x7FFFFF << 232  # regtest's target, 0x207fffff


def _solve(h: BlockHeader) -> BlockHeader:
    while int.from_bytes(h.hash(), "little") > HARD:
        h = h.with_nonce(h.nonce + 1)
    return h


def misbehaviours(scratch: Path) -> dict[str, list[tuple[str, bytes]]]:
    """Each way a peer misbehaves, as what it sends after the handshake ("raw": bytes as they
    are). Built on a scratch regtest-core chain, whose genesis every node shares."""
    with Chain.create(scratch, preset("regtest-core", 0)) as chain:
        genesis = chain.tip()
        bad_block = make_block(chain, chain.tip_hash, 1, b"bad", bad_merkle=True).serialize()
    missed = BlockHeader(0x20000000, genesis.hash(), bytes(32), genesis.time + 1, 0x207FFFFF, 0)
    while int.from_bytes(missed.hash(), "little") <= HARD:  # above the target its bits claim
        missed = missed.with_nonce(missed.nonce + 1)
    # real proof of work, but bits regtest never demands (it never retargets), or a time that is
    # not after the median time past
    wrong_bits = _solve(BlockHeader(0x20000000, genesis.hash(), bytes(32), genesis.time + 1, 0x207FFFFE, 0))
    too_old = _solve(BlockHeader(0x20000000, genesis.hash(), bytes(32), genesis.time, 0x207FFFFF, 0))
    # real proof of work, on parents nobody has
    stray = [_solve(BlockHeader(0x20000000, bytes([i]) * 32, bytes(32), genesis.time + 1, 0x207FFFFF, 0))
             for i in range(1, 13)]
    return {
        "random bytes": [("raw", random.Random(1).randbytes(200))],
        "a 33 MB message": [("raw", MAGIC + b"block".ljust(12, b"\0") + struct.pack("<I", 33_000_000) + bytes(4))],
        "a bad checksum": [("raw", p2p.frame(MAGIC, "ping", p2p.ping_payload(1))[:-1] + b"\x99")],
        "another network's magic": [("raw", p2p.frame(bytes.fromhex("f9beb4d9"), "ping", p2p.ping_payload(1)))],
        "a malformed payload": [("getheaders", b"\x01\x02")],
        "bad proof of work": [("headers", p2p.headers_payload([missed]))],
        "bits the chain does not demand": [("headers", p2p.headers_payload([wrong_bits]))],
        "a time before the median time past": [("headers", p2p.headers_payload([too_old]))],
        "headers that do not link": [("headers", p2p.headers_payload(stray[:2]))],
        "headers that never connect": [("headers", p2p.headers_payload([h])) for h in stray],
        "an invalid block": [("block", bad_block)],
        "a flood": [("ping", p2p.ping_payload(i)) for i in range(8000)],
    }


# The reason each case above is banned for, in order.
EXPECTED_REASONS = ["network magic", "over the 4000000-byte limit", "bad checksum", "network magic f9beb4d9",
                    "malformed getheaders", "high-hash", "bad-diffbits", "time-too-old", "non-continuous headers",
                    "11 headers messages in a row",
                    "bad-txnmrklroot", "message flood"]


def test_misbehaving_peers_are_dropped_and_banned_and_the_honest_peer_goes_on(tmp_path):
    cases = misbehaviours(tmp_path / "scratch.sqlite")
    b = node(tmp_path, "b")
    with nodes(b):
        a = node(tmp_path, "a", "--connect", target(b))  # a's own connection: never banned
        with nodes(a):
            wait_for(lambda: a.call("getconnectioncount") == 1, what="a connected to b")
            port = a.ready["p2p_port"]
            for n, (name, messages) in enumerate(cases.items()):
                with ScriptedPeer(port) as bad:
                    bad.handshake()
                    with contextlib.suppress(ConnectionError):
                        bad.send_raw(b"".join(data if cmd == "raw" else p2p.frame(MAGIC, cmd, data)
                                              for cmd, data in messages))
                    assert bad.closed_by_node(), name
                banned = wait_for(lambda: a.call("listbanned"), within=5, what=f"a ban for {name}")
                assert [x["address"] for x in banned] == ["127.0.0.1/32"], name
                # the ban's event line reaches our reader a moment after the ban itself
                wait_for(lambda n=n: len([e for e in a.events if e.get("status") == "banned"]) == n + 1,
                         within=5, what=f"the ban event for {name}")
                with ScriptedPeer(port) as again:  # banned: refused at once
                    assert again.closed_by_node(within=5), name
                assert a.call("clearbanned") is None
                # the honest peer never noticed: b's next block reaches a
                new = b.call("generatetoaddress", 1, ADDRESS)
                wait_for(lambda n=n, new=new: tip(a) == (n + 1, new[0]), what=f"a at b's block after {name}")
            reasons = [e["reason"] for e in a.events if e.get("status") == "banned"]
            assert len(reasons) == len(EXPECTED_REASONS)
            for reason, expected in zip(reasons, EXPECTED_REASONS, strict=True):
                assert expected in reason
    assert stored_blocks(tmp_path / "a" / "chain.sqlite") == stored_blocks(tmp_path / "b" / "chain.sqlite")


def test_fuzzed_messages_never_hurt_the_node(tmp_path):
    """A bounded fuzz: 300 mutated copies of well-formed messages, each on a fresh connection
    after a real handshake. The node answers or drops each, keeps serving RPC, and its chain is
    what it was."""
    scratch = tmp_path / "scratch.sqlite"
    with Chain.create(scratch, preset("regtest-core", 0)) as chain:
        made = grow(chain, chain.tip_hash, 3, 1, b"fuzz")
    samples = [("headers", p2p.headers_payload([m.header for m in made])), ("block", made[0].serialize()),
               ("getheaders", p2p.GetHeaders((made[0].hash,)).serialize()),
               ("inv", p2p.inv_payload([p2p.Inventory(2, made[1].hash)])),
               ("getdata", p2p.inv_payload([p2p.Inventory(p2p.MSG_WITNESS_BLOCK, made[0].hash)])),
               ("ping", p2p.ping_payload(5)), ("sendcmpct", b"\x00" + bytes(8)), ("feefilter", bytes(8))]
    rng = random.Random(2026)
    a = node(tmp_path, "a", "--rpc-rate", "100000")
    with nodes(a):
        before = a.call("generatetoaddress", 2, ADDRESS)
        start = stored_blocks(tmp_path / "a" / "chain.sqlite")
        deadline = time.monotonic() + 60
        for i in range(300):
            assert time.monotonic() < deadline, f"fuzz took too long (case {i})"
            command, payload = rng.choice(samples)
            data = bytearray(payload)
            for _ in range(rng.randint(1, 3)):
                if data and rng.random() < 0.6:
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                elif data and rng.random() < 0.5:
                    del data[rng.randrange(len(data)):]
                else:
                    data += rng.randbytes(rng.randint(1, 40))
            try:
                with ScriptedPeer(a.ready["p2p_port"], timeout=5) as peer:
                    peer.handshake()
                    peer.send(command, bytes(data))
                    peer.send("ping", p2p.ping_payload(99))  # answered unless it was dropped
                    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
                        peer.expect("pong", within=2)
            except ConnectionError:
                pass  # banned by an earlier case: refused at once
            if a.call("listbanned"):
                a.call("clearbanned")
        assert tip(a) == (2, before[-1])
        assert a.call("getblockcount") == 2
    after = stored_blocks(tmp_path / "a" / "chain.sqlite")
    assert after[:len(start)] == start  # nothing lost; fuzzed valid blocks may only add side blocks


def test_before_the_handshake_a_v2_opening_is_a_goodbye_and_other_messages_are_ignored(tmp_path):
    """Core 26+ opens connections it is asked for with BIP 324 (v2 transport: 64 bytes of
    ElligatorSwift key, random to us) and tries again in v1 when dropped. Before a handshake
    a wrong magic is therefore dropped without a ban, so Core's second try gets in; after the
    handshake the same bytes are misbehaviour (the case in the test above). A well-formed
    message other than version before the handshake is ignored, as Core ignores it."""
    a = node(tmp_path, "a")
    with nodes(a):
        with ScriptedPeer(a.ready["p2p_port"]) as v2:
            v2.send_raw(random.Random(324).randbytes(64))
            assert v2.closed_by_node()
        with ScriptedPeer(a.ready["p2p_port"]) as early:
            early.send("ping", p2p.ping_payload(7))
            early.send("getheaders", p2p.GetHeaders((bytes(32),)).serialize())
            assert early.handshake().user_agent.startswith("/pow-miner:")  # the same connection
        assert a.call("listbanned") == []


@pytest.mark.parametrize("args, message", [
    (["--listen", "abc"], "--listen 'abc' is not [HOST:]PORT"),
    (["--listen", "70000"], "--listen '70000' is not [HOST:]PORT"),
    (["--connect", "127.0.0.1:99999"], "--connect '127.0.0.1:99999' is not HOST:PORT"),
    (["--connect", ":8333"], "--connect ':8333' is not HOST:PORT"),
])
def test_bad_peer_options_are_one_line_usage_errors(tmp_path, args, message):
    out = subprocess.run([sys.executable, "-m", "miner", "node", "--chain", str(tmp_path / "c.sqlite"), *args],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and out.stderr.startswith(f"miner: error: {message}")
    assert out.stderr.count("\n") == 1 and not (tmp_path / "c.sqlite").exists()


def test_a_mutated_copy_of_a_block_costs_its_sender_not_the_sync(tmp_path):
    """A peer sends real headers, then a block whose body is not the one its header commits to
    (bad-txnmrklroot). It is banned, but the header stays good: an honest peer added later
    still delivers the real block and the node syncs (marking the header invalid would stall
    the sync for good)."""
    honest_chain = tmp_path / "h" / "chain.sqlite"
    honest_chain.parent.mkdir()
    with Chain.create(honest_chain, preset("regtest-core", 0)) as chain:
        made = grow(chain, chain.tip_hash, 3, 1, b"real")
    other = make_block_on_genesis(tmp_path / "scratch.sqlite")
    mutated = made[0].header.serialize() + b"\x01" + other.txs[0].raw  # header of b1, body of another
    h = node(tmp_path, "h")
    v = node(tmp_path, "v")
    with nodes(h, v):
        with ScriptedPeer(v.ready["p2p_port"]) as bad:
            bad.handshake()
            bad.send("headers", p2p.headers_payload([m.header for m in made]))
            bad.send("block", mutated)
            assert bad.closed_by_node()
        banned = wait_for(lambda: [e for e in v.events if e.get("status") == "banned"], what="the ban")
        assert "bad-txnmrklroot" in banned[0]["reason"]
        assert v.call("getblockchaininfo")["headers"] == 3  # the headers are still held, good
        assert v.call("addnode", target(h), "add") is None
        wait_for(lambda: tip(v) == (3, made[-1].hash[::-1].hex()), what="v synced from the honest peer")


def make_block_on_genesis(path: Path):
    with Chain.create(path, preset("regtest-core", 0)) as chain:
        return make_block(chain, chain.tip_hash, 1, b"other")


def test_a_peer_that_hangs_up_is_an_ordinary_goodbye_not_an_error(tmp_path):
    """A peer closing its connection (a node stopped, killed, or cut off with disconnectnode)
    ends the connection quietly: no `miner node: error:` line. The soak found every ordinary
    disconnect logged as "unexpected error ... PeerGone", because the catch-all for our own
    defects stood before the clause for a connection that ended."""
    a = node(tmp_path, "a")
    with nodes(a):
        with ScriptedPeer(a.ready["p2p_port"]) as peer:
            peer.handshake()
            wait_for(lambda: any(e.get("status") == "connected" for e in a.events), what="peer connected")
        wait_for(lambda: any(e.get("status") == "disconnected" for e in a.events), what="peer disconnected")
        assert a.call("getconnectioncount") == 0
    err = a.proc.stderr.read()
    assert "error:" not in err and "unexpected" not in err, err
