"""pooler's cpuminer mining `miner node` over getblocktemplate, as a new user would run it.

cpuminer (and cpuminer-opt) put the template's witness commitment in the coinbase and submit the
coinbase without its witness; Core's submitblock fills in the 32-byte zero witness reserved value,
and so must the node (before it did, 0 of 928 blocks from cpuminer were accepted). The live test
needs the binary (`CPUMINER=/path/to/minerd`, or `minerd` on PATH) and is skipped otherwise; the
exchange it once had with the node, recorded byte for byte in `tests/fixtures/`, is replayed in
every run.
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
