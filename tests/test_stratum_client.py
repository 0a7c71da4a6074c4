"""The Stratum client (`miner mine --url stratum+tcp://`): published examples with their stated
numbers, a pool scripted here over real sockets (set_extranonce, client.reconnect, refusals,
garbage), and the command line's answers to bad URLs."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from support.cliproc import assert_one_line_error, run
from support.jobs import EASY, job_params
from support.scripted_pool import ScriptedPool
from support.stratum_miner import build_header, dsha

from miner.mining.sources.pool_url import PoolUrl
from miner.mining.sources.stratum import StratumSource
from miner.node.stratum.jobs_and_shares import StratumJob
from miner.primitives.compact import DIFF1_TARGET

# --------------------------------------------------------------------------- published examples

# A: a Bitaxe Gamma mining Public-Pool on mainnet, 2025-06-19, as recorded (raw JSON and the ASIC's
# wire frames) in 256foundation/mujina, mujina-miner/src/asic/bm13xx/test_data.rs (commit 49aa16b).
# Block 901,936's template; version rolling with the mask 1fffe000.
PUBLIC_POOL = {
    "extranonce1": "4128064f", "extranonce2_size": 4, "mask": "1fffe000",
    "notify": ["875b4b7", "6b6455fd6db962c101f2d4fc0d67f4a3bc96391d000152960000000000000000",
               "02000000010000000000000000000000000000000000000000000000000000000000000000ffffffff170330c30d"
               "5075626c69632d506f6f6c",
               "ffffffff02e5b5c61200000000220020984a77c289084ff2d434c316bdada021c6c183d507c8a20d3b159b09ac02fe"
               "280000000000000000266a24aa21a9edb98ee50410ed4abd48401ed484fc874409d086a3faf0816136a8ad616831"
               "4c5800000000",
               ["21af451ddb51e887ff1feb5592b87290098565035eb8500031aedcc776d4e72a",
                "c5af269519c809a9546d5a58ca6445d3dbb80cb7045448ecc48309af034da8f8",
                "fb9f8f9959f6bb0ceb63fa53aed1d5a615c6b6d3f50a468ea89a45a1234bda74",
                "a4f4fee8e5fc19ca8d93e67b9236c37ddb864982010434745c0abfe9b914980c",
                "33092206642744fbe5499c3e621cd5c6b52733e54fbebd869f070082b807f740",
                "3b857e32c5cff4864efab967b9a456ca03b2167ab96bd9076ce294c8a67a7fe2",
                "881a07cd881d0c3e590b4b090ea8d58e1439dc56c63686f7de23c47045441e30",
                "315e4dbcc8e7b1c9d594a73978268791880dddb2c26eec8e75768668dad99d80",
                "69952b77c632be16b1ac7ac7048f13d4e962b2e215d79a343f01e6e281d7c304",
                "fc63eb4392c4d6c6d689788875fca35143fdcd4f4a82e8698e0e441751a70b4a",
                "09e419bbe20aa3a7640f1b91f50599ceddff899e90d3f18951ad5418c4850a6b",
                "004978aa346b4f1880bcadb3ca3792d771ee6aeca427f61e74baba44b75cfb88"],
               "20000000", "17023a04", "685468d7", False],
    # the accepted mining.submit (worker name redacted in the source)
    "submit": ["bc1q...bitaxe", "875b4b7", "17000000", "685468d7", "7552034c", "00b44000"],
    "stated_version": 0x20B44000,  # "ver: 20B44000"
    "stated_difficulty": 29588.0,  # "Nonce 7552034C diff 29588.0 of 8192"
    # The job frame sent to the chip: bytes 18..49 are the merkle root, 50..81 the previous hash,
    # each as its eight 4-byte words in reverse order.
    "frame": "55aa2156680100000000043a0217d76854685519a7cb044f88726355919e61a98bcf71a0c28795ea54db8c36414b06dd"
             "f5f00000000000000000965201001d3996bca3f4670dfcd4f201c162b96dfd55646b00000020721c",
}

# B: miningcore's unit test BitcoinJob_Should_Accept_Valid_Share (oliverw/miningcore,
# src/Miningcore.Tests/Blockchain/Bitcoin/BitcoinJobTests.cs, commit 1d79333): regtest, no other
# transactions, with the block hash and the whole block stated. coinb1/coinb2 are the stated
# block's coinbase cut around extranonce1 + extranonce2; the previous hash in Stratum's order.
MININGCORE = {
    "extranonce1": "01000058", "extranonce2_size": 4,
    "notify": ["1", "64da76bba907b72221c431082923817937fdc53b19b5be7b0909578500000000",
               "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff295e0c0b2f"
               "454231362f414431322f04f286ef5900",
               "0c2f4d696e696e67436f72652f000000000100f2052a010000001976a9142ebb5cccf9a6bb927661d2953655c43c"
               "04accc3788ac00000000",
               [], "20000000", "207fffff", "59ef86f2", True],
    "extranonce2": "01000000", "ntime": "59ef86f2", "nonce": "8d84ae6a",
    "block_hash": "601ed85039804bcecbbdb53e0ca358aeb8dabef2366fb64c216aac3aba02b716",
    "block_hex": "00000020bb76da6422b707a90831c421798123293bc5fd377bbeb5198557090900000000fd5418fe788ef9"
                 "61678e4bacdd1fe3903185b9ec63865bb3d2d279bb0eb48c0bf286ef59ffff7f206aae848d01010000000100"
                 "00000000000000000000000000000000000000000000000000000000000000ffffffff295e0c0b2f45423136"
                 "2f414431322f04f286ef590001000058010000000c2f4d696e696e67436f72652f000000000100f2052a0100"
                 "00001976a9142ebb5cccf9a6bb927661d2953655c43c04accc3788ac00000000",
}


def _words_reversed(raw: bytes) -> bytes:
    return b"".join(raw[i:i + 4] for i in range(28, -1, -4))


def client_job(example: dict, version_mask: str | None):
    """The job our client makes of the example's notify, through a real connection."""
    pool = ScriptedPool(example["extranonce1"], example["extranonce2_size"], version_mask,
                        on_connect=[{"method": "mining.notify", "params": example["notify"]}])
    jobs: queue.Queue = queue.Queue()
    source = StratumSource([PoolUrl("127.0.0.1", pool.port, "bc1q...bitaxe", "x")])
    try:
        source.open()
        source.start(lambda job: job is not None and jobs.put(job))
        job = jobs.get(timeout=10)
        return job, source._link
    finally:
        source.stop()
        pool.close()


def test_a_published_public_pool_share_with_version_rolling_is_reproduced():
    ex = PUBLIC_POOL
    job, link = client_job(ex, ex["mask"])
    assert link.version_mask == 0x1FFFE000
    assert job.version & ~0x1FFFE000 == 0x20000000  # rolled within the mask only
    job = replace(job, version=ex["stated_version"])  # the bits the Bitaxe rolled
    extranonce2 = int.from_bytes(bytes.fromhex(ex["submit"][2]), "little")
    nonce = int(ex["submit"][4], 16)
    # the mining.submit our client sends for that share is the one the Bitaxe sent
    assert link.submit_params(job, extranonce2, nonce) == ex["submit"]
    frame = bytes.fromhex(ex["frame"])
    assert job.merkle_root(extranonce2) == _words_reversed(frame[18:50])
    assert job.prev_hash == _words_reversed(frame[50:82])
    header = job.header(extranonce2, nonce)
    assert round(DIFF1_TARGET / int.from_bytes(header.hash(), "little"), 1) == ex["stated_difficulty"]
    # independently: hashlib over the header built from the notify's fields
    independent = build_header(ex["notify"], ex["extranonce1"], bytes.fromhex(ex["submit"][2]),
                               int(ex["submit"][3], 16), nonce, ex["stated_version"])
    assert header.serialize() == independent
    # and the server's side: the share rebuilt from the submit's fields is the same header
    server_job = StratumJob("875b4b7", replace(job, version=0x20000000), job.time)
    share = server_job.share(bytes.fromhex(ex["extranonce1"]), bytes.fromhex(ex["submit"][2]),
                             int(ex["submit"][3], 16), nonce, ex["stated_version"])
    assert share.header.serialize() == independent and share.hash == dsha(independent)


def test_a_published_miningcore_block_is_reproduced_to_the_byte():
    ex = MININGCORE
    job, link = client_job(ex, None)  # a pool without version rolling: the configure is refused
    assert link.version_mask == 0 and job.version == 0x20000000
    extranonce2 = int.from_bytes(bytes.fromhex(ex["extranonce2"]), "little")
    nonce = int(ex["nonce"], 16)
    assert link.submit_params(job, extranonce2, nonce) == ["bc1q...bitaxe", "1", ex["extranonce2"], ex["ntime"],
                                                           ex["nonce"]]
    assert job.header(extranonce2, nonce).hash_hex() == ex["block_hash"]
    assert job.block(extranonce2, nonce).serialize().hex() == ex["block_hex"]
    assert job.is_block(extranonce2, nonce)  # regtest's target: this share is the block


# --------------------------------------------------------------------------- a scripted pool

def mine(*urls: str, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "miner", "mine", *sum((["--url", u] for u in urls), []),
                             "--backend", "ref", "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_share(params: list, job: list, extranonce1: str, mask: int = 0x1FFFE000) -> None:
    """A submitted share, rebuilt with hashlib from the job it names, meets the easy target."""
    version = 0x20000000
    if len(params) > 5:
        bits = int(params[5], 16)
        assert bits & ~mask == 0
        version = (version & ~mask) | bits
    header = build_header(job, extranonce1, bytes.fromhex(params[2]), int(params[3], 16), int(params[4], 16),
                          version)
    assert int.from_bytes(dsha(header), "little") <= int(DIFF1_TARGET / EASY)


def test_set_extranonce_and_difficulty_are_honoured_from_the_next_job():
    job_a = job_params("a")
    pool = ScriptedPool("aabbccdd", 4, on_connect=[{"method": "mining.set_difficulty", "params": [EASY]},
                                                  {"method": "mining.notify", "params": job_a}])
    proc = mine(f"stratum+tcp://alice.rig:pw@127.0.0.1:{pool.port}", extra=("--shares", "400"))
    try:
        pool.wait(lambda: len(pool.submits) >= 3)
        sent = list(pool.received[:3])
        assert [m["method"] for m in sent] == ["mining.configure", "mining.subscribe", "mining.authorize"]
        assert sent[2]["params"] == ["alice.rig", "pw"]
        for params in pool.submits[:3]:
            assert params[0] == "alice.rig" and params[1] == "a"
            check_share(params, job_a, "aabbccdd")
        job_b = job_params("b")
        pool.send("mining.set_extranonce", ["0102030405", 3])
        pool.send("mining.notify", job_b)
        pool.wait(lambda: any(p[1] == "b" for p in pool.submits))
        time.sleep(0.3)
        for params in [p for p in pool.submits if p[1] == "b"]:
            assert len(params[2]) == 6  # three bytes of extranonce2 now
            check_share(params, job_b, "0102030405")
    finally:
        proc.kill()
        proc.wait()
        pool.close()


def test_a_refused_share_is_reported_with_the_pools_reason_and_counted():
    pool = ScriptedPool(on_connect=[{"method": "mining.set_difficulty", "params": [EASY]},
                                    {"method": "mining.notify", "params": job_params("a")}])
    pool.submit_result = [23, "Low difficulty share", None]
    proc = mine(f"stratum+tcp://bob@127.0.0.1:{pool.port}", extra=("--shares", "1"))
    try:
        pool.wait(lambda: len(pool.submits) >= 3)
        pool.submit_result = True
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        pool.close()
    events = [json.loads(line) for line in out.splitlines()]
    refused = [e for e in events if e["event"] == "share" and not e["accepted"]]
    assert refused and refused[0]["verdict"] == "Low difficulty share (23)"
    summary = events[-1]
    assert summary["shares"]["accepted"] == 1
    assert summary["shares"]["reasons"]["Low difficulty share (23)"] == summary["shares"]["rejected"] >= 3


def test_client_reconnect_moves_to_the_port_named_on_the_same_host():
    second = ScriptedPool("22222222", on_connect=[{"method": "mining.set_difficulty", "params": [EASY]},
                                                  {"method": "mining.notify", "params": job_params("b")}])
    first = ScriptedPool("11111111", on_connect=[{"method": "mining.notify", "params": job_params("a")},
                                                 {"method": "client.reconnect",
                                                  "params": ["127.0.0.1", second.port, 0]}])
    proc = mine(f"stratum+tcp://carol@127.0.0.1:{first.port}", extra=("--shares", "2"))
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        first.close()
        second.close()
    assert proc.returncode == 0
    connected = [json.loads(line) for line in out.splitlines() if '"connected"' in line]
    assert [e["extranonce1"] for e in connected] == ["11111111", "22222222"]
    assert all(p[1] == "b" for p in second.submits) and len(second.submits) >= 2


def test_a_pool_that_sends_garbage_is_left_for_the_next_in_order():
    bad = ScriptedPool(garbage=b"this is not json\n")
    good = ScriptedPool("33333333", on_connect=[{"method": "mining.set_difficulty", "params": [EASY]},
                                                {"method": "mining.notify", "params": job_params("g")}])
    proc = mine(f"stratum+tcp://dave@127.0.0.1:{bad.port}", f"stratum+tcp://dave@127.0.0.1:{good.port}",
                extra=("--shares", "2"))
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        bad.close()
        good.close()
    assert proc.returncode == 0, err
    assert bad.connections >= 1 and good.submits
    assert "Traceback" not in err


def test_no_pool_reachable_or_authorized_with_no_retry_left_is_one_line_before_any_compile():
    refusing = ScriptedPool(authorize=False)
    try:
        proc = run("mine", "--url", f"stratum+tcp://eve@127.0.0.1:{refusing.port}", "--url",
                   "stratum+tcp://eve@127.0.0.1:1", "--retries", "0", timeout=60)
    finally:
        refusing.close()
    assert_one_line_error(proc, 1, "cannot mine at any pool")
    assert "mining.authorize refused: Unauthorized worker (24)" in proc.stderr
    assert "127.0.0.1:1: cannot connect" in proc.stderr


@pytest.mark.parametrize("args, fragment", [
    (("--url", "stratum+tcp://127.0.0.1:3333"), "needs a worker name"),
    (("--url", "stratum+tcp://w@127.0.0.1"), "needs the pool's port"),
    (("--url", "stratum+tcp://w@127.0.0.1:x"), "not a URL"),
    (("--url", "stratum+tcp://w@h:1", "--url", "http://u:p@127.0.0.1:1"), "not both"),
    (("--url", "http://u:p@127.0.0.1:1", "--url", "http://u:p@127.0.0.1:2"), "one node"),
    (("--shares", "3"), "--shares is for mining at a pool"),
    (("--url", "stratum+tcp://w@h:1", "--payout-address", "x"), "pool builds the coinbase"),
    (("--url", "stratum+tcp://w@h:1", "--pool-retry", "0"), "--pool-retry"),
])
def test_bad_pool_arguments_are_one_line_with_exit_2(args, fragment, tmp_path):
    proc = run("mine", "--chain", str(tmp_path / "c.sqlite"), *args)
    assert_one_line_error(proc, 2, fragment)


def _a_share(job) -> tuple[int, int]:
    """(extranonce, nonce) of a header of `job` that meets its share target, found with hashlib."""
    for nonce in range(1 << 24):
        if int.from_bytes(dsha(job.header(5, nonce).serialize()), "little") <= job.target:
            return 5, nonce
    raise AssertionError("no share found")


def test_clean_jobs_voids_every_earlier_jobs_shares_and_a_plain_notify_does_not():
    """The client's own submit path over a real socket: a share of job a found after a notify
    with clean_jobs=true (job b, same previous block) is dropped unsent; a share of job b found
    after a notify with clean_jobs=false (job c) is sent, as is one of job c."""
    from miner.mining.work import Solution
    pool = ScriptedPool(on_connect=[{"method": "mining.set_difficulty", "params": [EASY]},
                                    {"method": "mining.notify", "params": job_params("a")}])
    jobs: queue.Queue = queue.Queue()
    source = StratumSource([PoolUrl.parse(f"stratum+tcp://dora@127.0.0.1:{pool.port}")])

    def next_job(job_id: str):
        while True:
            job = jobs.get(timeout=20)
            if job is not None and job.job_id.endswith(f":{job_id}"):
                return job
    try:
        source.open()
        source.start(jobs.put)
        job_a = next_job("a")
        pool.send("mining.notify", job_params("b", clean=True))
        job_b = next_job("b")
        assert job_b.prev_hash == job_a.prev_hash  # only clean_jobs tells the client
        assert source.submit(Solution(job_a, *_a_share(job_a))) is None
        pool.send("mining.notify", job_params("c", clean=False))
        job_c = next_job("c")
        for job in (job_b, job_c):
            verdict = source.submit(Solution(job, *_a_share(job)))
            assert verdict is not None and verdict.accepted and verdict.kind == "share", verdict
        assert [p[1] for p in pool.submits] == ["b", "c"]
    finally:
        source.stop()
        pool.close()
