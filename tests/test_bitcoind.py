"""`miner mine --url` against a real Bitcoin Core regtest node.

Core validates everything this project's node does not (scripts, amounts, sigops, policy), so a
block it accepts is a block the Bitcoin world accepts. The node gets a segwit transaction signed by
python-bitcoinlib into its mempool, so its templates carry a transaction with a witness and a
witness commitment; the miner must then get its blocks accepted by `submitblock`.

Skipped without a `bitcoind` ($BITCOIND or PATH). `RECORD_CORE_TEMPLATE=path` makes the second test
write the template Core served and the block Core accepted for it, which
`test_gbt_published.py` replays on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bitcoin import SelectParams
from bitcoin.core import (
    CMutableTransaction,
    COutPoint,
    CTxIn,
    CTxInWitness,
    CTxOut,
    CTxWitness,
    b2x,
    lx,
)
from bitcoin.core.script import (
    OP_CHECKSIG,
    OP_DUP,
    OP_EQUALVERIFY,
    OP_HASH160,
    SIGHASH_ALL,
    SIGVERSION_WITNESS_V0,
    CScript,
    CScriptWitness,
    SignatureHash,
)
from bitcoin.core.serialize import Hash160
from bitcoin.wallet import CKey, P2WPKHBitcoinAddress
from support.bitcoind import Bitcoind, bitcoind_path

from miner.mining.sources.gbt import TEMPLATE_REQUEST
from miner.mining.template import block_hex, job_from_template
from miner.mining.work import Solution

pytestmark = pytest.mark.skipif(
    bitcoind_path() is None,
    reason="no Bitcoin Core here: set BITCOIND=/path/to/bitcoind (or put it on PATH) to mine a real regtest node")

ROOT = Path(__file__).resolve().parent.parent
KEY = CKey(hashlib.sha256(b"pow-miner regtest test key").digest())
SCRIPT = CScript([0, Hash160(KEY.pub)])
MESSAGE = b"pow-miner"


@pytest.fixture
def core(tmp_path):
    SelectParams("regtest")
    try:
        with Bitcoind(bitcoind_path(), tmp_path / "core") as node:
            yield node
    finally:
        SelectParams("mainnet")


def address() -> str:
    return str(P2WPKHBitcoinAddress.from_scriptPubKey(SCRIPT))


def fund_and_spend(core: Bitcoind) -> str:
    """Mine 101 blocks to the test key with Core's own generatetoaddress, then spend the first
    coinbase in a P2WPKH transaction signed here; its txid, once Core's mempool took it."""
    core.call("generatetoaddress", 101, address())
    block1 = core.call("getblock", core.call("getblockhash", 1), 2)
    coinbase = block1["tx"][0]
    value = round(coinbase["vout"][0]["value"] * 100_000_000)
    tx = CMutableTransaction([CTxIn(COutPoint(lx(coinbase["txid"]), 0))],
                             [CTxOut(value - 10_000, SCRIPT)])
    script_code = CScript([OP_DUP, OP_HASH160, Hash160(KEY.pub), OP_EQUALVERIFY, OP_CHECKSIG])
    sighash = SignatureHash(script_code, tx, 0, SIGHASH_ALL, amount=value, sigversion=SIGVERSION_WITNESS_V0)
    tx.wit = CTxWitness([CTxInWitness(CScriptWitness([KEY.sign(sighash) + bytes([SIGHASH_ALL]), KEY.pub]))])
    txid = core.call("sendrawtransaction", b2x(tx.serialize()))
    assert core.call("getrawmempool") == [txid]
    return txid


def test_miner_mine_url_gets_its_blocks_accepted_by_bitcoin_core(core):
    txid = fund_and_spend(core)
    miner = subprocess.run(
        [sys.executable, "-m", "miner", "mine", "--url", core.url, "--rpc-cookie-file", str(core.cookie),
         "--backend", "ref", "--blocks", "3", "--json", "--payout-address", address()],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert miner.returncode == 0, miner.stderr[-2000:]
    events = [json.loads(line) for line in miner.stdout.splitlines()]
    found = [e for e in events if e["event"] == "block"]
    assert [e["verdict"] for e in found] == ["accepted"] * 3, found

    # Core's own view: our three blocks are its active chain, the first carries the segwit spend
    # and a witness commitment, each pays the payout address, and nothing is left in the mempool.
    assert core.call("getblockcount") == 104
    hashes = [core.call("getblockhash", h) for h in (102, 103, 104)]
    assert hashes == [e["hash_hex"] for e in found]
    first = core.call("getblock", hashes[0], 2)
    assert [t["txid"] for t in first["tx"][1:]] == [txid]
    for h in hashes:
        block = core.call("getblock", h, 2)
        coinbase = block["tx"][0]
        assert coinbase["vout"][0]["scriptPubKey"]["address"] == address()
        assert any(o["scriptPubKey"]["hex"].startswith("6a24aa21a9ed") for o in coinbase["vout"])
    assert [t["status"] for t in core.call("getchaintips")] == ["active"]
    assert core.call("getrawmempool") == []


def test_a_block_built_from_cores_template_passes_its_proposal_check_and_submitblock(core):
    """In-process: Core's template with a segwit transaction, our coinbase and merkle branch,
    Core's BIP 23 proposal check (all of its rules but proof of work), then a solved block."""
    fund_and_spend(core)
    template = core.call("getblocktemplate", TEMPLATE_REQUEST)
    assert len(template["transactions"]) == 1 and template["default_witness_commitment"]
    job = job_from_template(template, bytes(SCRIPT), MESSAGE)
    extranonce = 1
    unsolved = block_hex(Solution(job, extranonce, 0))
    # BIP 23: Core checks a proposal with every rule but proof of work; null means valid.
    assert core.call("getblocktemplate", {"mode": "proposal", "data": unsolved, "rules": ["segwit"]}) is None
    work = job.work(extranonce)
    nonce = next(n for n in range(1 << 16) if work.check(n))  # regtest's target: every other nonce
    solved = block_hex(Solution(job, extranonce, nonce))
    assert core.call("submitblock", solved) is None
    assert core.call("getbestblockhash") == Solution(job, extranonce, nonce).header.hash_hex()

    record = os.environ.get("RECORD_CORE_TEMPLATE")
    if record:
        Path(record).write_text(json.dumps({
            "source": f"Bitcoin Core {core.call('getnetworkinfo')['subversion']} regtest, recorded by "
                      "tests/test_bitcoind.py: the getblocktemplate result, and the block built from it "
                      "by miner.mining.template that Core's submitblock accepted (null).",
            "template": template, "payout_script": bytes(SCRIPT).hex(), "message": MESSAGE.decode(),
            "extranonce": extranonce, "nonce": nonce, "block": solved}, indent=1) + "\n")
