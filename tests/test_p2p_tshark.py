"""Our peer-to-peer traffic read by an independent decoder: Wireshark's Bitcoin dissector
(tshark), on a capture of two nodes syncing over 127.0.0.1. Every message decodes, none is
flagged malformed, and the fields read back are the chain's. Needs tshark and the right to
capture on the loopback interface (root); skipped otherwise, with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter

import pytest
from support.p2p_nodes import ADDRESS, node, nodes, tip, wait_for

WHY_NOT = ("no tshark here (install Wireshark's tshark to read the capture)" if shutil.which("tshark") is None
           else "needs root to capture on the loopback interface" if os.geteuid() != 0 else None)
pytestmark = [pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]

GENESIS_INTERNAL = bytes.fromhex("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206")[::-1].hex()


def test_tshark_decodes_every_message_two_nodes_exchange(tmp_path):
    a = node(tmp_path, "a")
    with nodes(a):
        mined = a.call("generatetoaddress", 3, ADDRESS)
        port = a.ready["p2p_port"]
        capture = tmp_path / "p2p.pcap"
        dumper = subprocess.Popen(["tshark", "-q", "-i", "lo", "-f", f"tcp port {port}", "-w", str(capture)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: capture.exists() and capture.stat().st_size > 0, within=30, what="tshark capturing")
            time.sleep(0.5)
            b = node(tmp_path, "b", "--connect", f"127.0.0.1:{port}")
            with nodes(b):
                wait_for(lambda: tip(b) == (3, mined[-1]), what="b synced")
                time.sleep(1)  # the last pings and pongs
        finally:
            dumper.terminate()
            dumper.wait(30)
    fields = subprocess.run(
        ["tshark", "-r", str(capture), "-d", f"tcp.port=={port},bitcoin", "-Y", "bitcoin", "-T", "fields",
         "-e", "bitcoin.command", "-e", "_ws.malformed", "-e", "bitcoin.version.start_height",
         "-e", "bitcoin.block.bits", "-e", "bitcoin.block.prev_block", "-e", "bitcoin.headers.count"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split("\t") for line in fields.splitlines() if line.strip()]
    commands = Counter(cmd for row in rows for cmd in row[0].split(","))
    assert all(not row[1] for row in rows), [r for r in rows if r[1]]  # nothing malformed
    for command in ("version", "verack", "sendheaders", "getheaders", "headers", "getdata", "block"):
        assert commands[command] >= 1, commands
    assert commands["block"] == 3
    heights = sorted(int(h) for row in rows if row[0] == "version" for h in row[2].split(","))
    assert heights == [0, 3]  # b starts empty, a at the three blocks it mined
    blocks = [row for row in rows if row[0] == "block"]
    assert {row[3] for row in blocks} == {"0x207fffff"}
    assert GENESIS_INTERNAL in {row[4] for row in blocks}  # the first block builds on Core's regtest genesis
    assert any(row[5].split(",")[0] == "3" for row in rows if row[0] == "headers")
