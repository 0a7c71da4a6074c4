"""A real Bitcoin Core (`bitcoind -regtest`, from $BITCOIND or PATH; skipped otherwise) as a peer
of `miner node` on the regtest-core chain: Core's blocks reach our node and ours reach Core,
over a connection either side opens. The exchange through a recording proxy is what
tests/fixtures/p2p_core_exchange.json keeps (rewritten with MINER_RECORD_FIXTURES=1), and
test_p2p_replay.py checks it in every run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from support.bitcoind import Bitcoind, bitcoind_path
from support.p2p_nodes import ADDRESS, node, nodes, target, tip, wait_for
from support.p2p_proxy import RecordingProxy

pytestmark = pytest.mark.skipif(
    bitcoind_path() is None,
    reason="no Bitcoin Core here: set BITCOIND=/path/to/bitcoind (or put it on PATH) to make it a peer")

FIXTURE = Path(__file__).parent / "fixtures" / "p2p_core_exchange.json"


def core_tip(core: Bitcoind) -> tuple[int, str]:
    return core.call("getblockcount"), core.call("getbestblockhash")


def test_core_and_our_node_mine_one_chain_over_p2p(tmp_path):
    with Bitcoind(bitcoind_path(), tmp_path / "core", listen=True) as core:
        core_blocks = core.call("generatetoaddress", 20, ADDRESS)
        with RecordingProxy(core.p2p_port, ("miner", "core")) as proxy:
            ours = node(tmp_path, "a", "--connect", f"127.0.0.1:{proxy.port}")
            with nodes(ours):
                wait_for(lambda: tip(ours) == (20, core_blocks[-1]), what="our node at Core's tip")
                mined = ours.call("generatetoaddress", 3, ADDRESS)
                wait_for(lambda: core_tip(core) == (23, mined[-1]), what="Core at our tip")
                more = core.call("generatetoaddress", 1, ADDRESS)
                wait_for(lambda: tip(ours) == (24, more[0]), what="our node at Core's new block")
                peer = ours.call("getpeerinfo")[0]
                assert peer["subver"].startswith("/Satoshi:") and peer["version"] >= 70016
                theirs = core.call("getpeerinfo")
                assert [p["subver"] for p in theirs] == ["/pow-miner:0.1.0/"]
                assert theirs[0]["synced_blocks"] >= 23  # what Core knows we have: our three blocks at least
                assert [t["status"] for t in core.call("getchaintips")] == ["active"]
                assert core.call("listbanned") == []
                messages = list(proxy.messages)
        if os.environ.get("MINER_RECORD_FIXTURES") == "1":
            FIXTURE.write_text(json.dumps({
                "recorded": time.strftime("%Y-%m-%d"), "core": peer["subver"],
                "what": "miner node (regtest-core) --connect bitcoind -regtest: Core had mined 20 blocks, "
                        "our node synced them, mined 3 that Core fetched, then Core mined 1 more",
                "tip": more[0], "messages": [{"from": who, "command": command, "payload": payload.hex()}
                                             for who, command, payload in messages]}, indent=1) + "\n")
        commands = {(who, command) for who, command, _ in messages}
        for expected in [("core", "version"), ("core", "headers"), ("core", "block"), ("miner", "getdata"),
                         ("miner", "headers"), ("core", "getdata"), ("miner", "block")]:
            assert expected in commands


def test_core_connects_to_our_node_and_syncs_from_it(tmp_path):
    ours = node(tmp_path, "a")
    with nodes(ours):
        mined = ours.call("generatetoaddress", 12, ADDRESS)
        with Bitcoind(bitcoind_path(), tmp_path / "core", listen=True) as core:
            core.call("addnode", target(ours), "onetry")
            wait_for(lambda: core_tip(core) == (12, mined[-1]), what="Core synced from our node")
            inbound = [p for p in ours.call("getpeerinfo") if p["inbound"]]
            assert inbound and inbound[0]["subver"].startswith("/Satoshi:")
            block = core.call("generatetoaddress", 1, ADDRESS)[0]
            wait_for(lambda: tip(ours) == (13, block), what="Core's block relayed to us")
