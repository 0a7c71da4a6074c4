"""A real exchange with Bitcoin Core 29.3 over the peer-to-peer protocol (recorded by
test_p2p_bitcoind.py through a proxy, tests/fixtures/p2p_core_exchange.json), checked in every
run without Core: every message either side sent parses, Core's blocks and ours pass the chain's
full validation, and a live node fed Core's own bytes syncs to the recorded tip."""

from __future__ import annotations

import json
import time
from pathlib import Path

from support.p2p_nodes import node, nodes, tip
from support.p2p_peer import ScriptedPeer

from miner.chain.chain import Chain
from miner.consensus.params import preset
from miner.primitives import p2p
from miner.primitives.block import Block
from miner.primitives.hashes import display_hex

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "p2p_core_exchange.json").read_text())
MESSAGES = [(m["from"], m["command"], bytes.fromhex(m["payload"])) for m in FIXTURE["messages"]]

PARSERS = {"version": p2p.Version.parse, "headers": p2p.parse_headers, "getheaders": p2p.GetHeaders.parse,
           "inv": p2p.parse_inv, "getdata": p2p.parse_inv, "notfound": p2p.parse_inv, "block": Block.parse,
           "ping": p2p.parse_ping, "pong": p2p.parse_ping, "sendcmpct": p2p.SendCmpct.parse,
           "feefilter": p2p.parse_feefilter}


def test_every_recorded_message_parses_and_cores_handshake_is_what_we_expect():
    assert FIXTURE["core"].startswith("/Satoshi:29.")
    seen = set()
    for who, command, payload in MESSAGES:
        seen.add((who, command))
        if command in p2p.EMPTY:
            assert payload == b"", command
        else:
            PARSERS[command](payload)  # raises on anything malformed
    core_version = p2p.Version.parse(next(p for w, c, p in MESSAGES if w == "core" and c == "version"))
    assert core_version.version >= 70016 and core_version.user_agent == FIXTURE["core"]
    assert core_version.services & (p2p.NODE_NETWORK | p2p.NODE_WITNESS) == p2p.NODE_NETWORK | p2p.NODE_WITNESS
    # Core speaks what a modern peer speaks; each of these must be understood or politely ignored
    for command in ("wtxidrelay", "sendaddrv2", "sendcmpct", "feefilter", "sendheaders", "getheaders", "getdata"):
        assert ("core", command) in seen, command


def test_the_recorded_blocks_pass_the_chains_full_validation(tmp_path):
    blocks = {b.hash: b for b in (Block.parse(p) for _, c, p in MESSAGES if c == "block")}
    with Chain.create(tmp_path / "chain.sqlite", preset("regtest-core", 0)) as chain:
        pending = dict(blocks)
        while pending:
            ready = [b for b in pending.values() if chain.node(b.header.prev_hash) is not None]
            assert ready, "a recorded block whose parent is not recorded"
            for b in ready:
                chain.add_block(b, now=b.header.time + 60)
                del pending[b.hash]
        assert display_hex(chain.tip_hash) == FIXTURE["tip"] and chain.height == len(blocks)
        assert chain.verify() == chain.height


def test_a_node_fed_cores_recorded_bytes_syncs_to_the_recorded_tip(tmp_path):
    core_says = {c: p for w, c, p in reversed(MESSAGES) if w == "core"}  # the first of each
    first_headers = next(p for w, c, p in MESSAGES if w == "core" and c == "headers")
    blocks = {b.hash: b for b in (Block.parse(p) for _, c, p in MESSAGES if c == "block")}
    a = node(tmp_path, "a")
    with nodes(a), ScriptedPeer(a.ready["p2p_port"]) as core:
        core.send("version", core_says["version"])  # Core's own version message, byte for byte
        for command in ("wtxidrelay", "sendaddrv2", "verack"):
            core.send(command)
        headers = p2p.parse_headers(first_headers)
        rest = sorted((b for b in blocks.values() if b.hash not in {h.hash() for h in headers}),
                      key=lambda b: b.header.time)
        sent_rest = False
        deadline = time.monotonic() + 30
        core.sock.settimeout(0.2)
        while tip(a)[1] != FIXTURE["tip"]:
            assert time.monotonic() < deadline, f"node at {tip(a)}"
            if not sent_rest and tip(a)[0] == len(headers):
                # Core's announcement of what came next (our three blocks and Core's last)
                core.send("headers", p2p.headers_payload([b.header for b in rest]))
                sent_rest = True
            try:
                command, payload = core.recv()
            except TimeoutError:
                continue
            if command == "getheaders":
                core.send("headers", first_headers)  # Core's reply, byte for byte
            elif command == "getdata":
                for item in p2p.parse_inv(payload):
                    core.send("block", blocks[item.hash].serialize())
            elif command == "ping":
                core.send("pong", payload)
        assert tip(a)[0] == len(blocks)
