"""scrypt proof of work (Litecoin's N=1024, r=1, p=1): RFC 7914's vectors, real Litecoin
mainnet headers from three eras with their published hashes, the chain parameter `pow`, a
local-scrypt chain mined and verified, and a block whose sha256d meets its target but whose
scrypt does not, refused."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from support import compile_lane
from support.vectors import LITECOIN

from miner.backends.ref import ReferenceBackend
from miner.backends.registry import make_backends
from miner.backends.work import KernelWork
from miner.chain.chain import Chain
from miner.consensus.params import ChainParams, preset
from miner.consensus.pow import SCRYPT, SHA256D, scrypt_pow
from miner.errors import InvalidBlock, InvalidInput
from miner.primitives.compact import bits_to_target
from miner.primitives.hashes import display_hex
from miner.primitives.header import BlockHeader

ROOT = Path(__file__).resolve().parent.parent

# RFC 7914, section 12: (P, S, N, r, p, dkLen, DK).
RFC7914 = [
    (b"", b"", 16, 1, 1, 64,
     "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17"
     "e8d3e0fb2e0d3628cf35e20c38d18906"),
    (b"password", b"NaCl", 1024, 8, 16, 64,
     "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830da"
     "c727afb94a83ee6d8360cbdfa2cc0640"),
]

# Litecoin's genesis proof-of-work hash as published beside its parameters (a genesis
# generator's Litecoin sample, "Ctrl Hash").
LITECOIN_GENESIS_POW = "0000050c34a64b415b6b15b37f2216634b5b1669cb9a2e38d76f7213b0671e00"


@pytest.mark.parametrize("password, salt, n, r, p, dklen, expected", RFC7914)
def test_rfc7914_vectors(password, salt, n, r, p, dklen, expected):
    assert hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen).hex() == expected


@pytest.mark.parametrize("name", list(LITECOIN))
def test_litecoin_headers_meet_their_bits_under_scrypt_and_not_under_sha256d(name):
    raw, block_id = LITECOIN[name]
    header = BlockHeader.deserialize(raw)
    assert display_hex(header.hash()) == block_id  # the id stays sha256d
    target = bits_to_target(header.bits)
    assert int.from_bytes(scrypt_pow(raw), "little") <= target
    assert int.from_bytes(SHA256D.hash(raw), "little") > target
    if name == "genesis":
        assert display_hex(SCRYPT.pow_hash(header, header.hash())) == LITECOIN_GENESIS_POW


def test_the_reference_backend_finds_litecoins_nonce_and_only_under_scrypt():
    raw, _ = LITECOIN["block 400,000"]
    nonce = struct.unpack_from("<I", raw, 76)[0]
    target = bits_to_target(struct.unpack_from("<I", raw, 72)[0])
    scrypt_work = KernelWork(raw[:76], target, pow="scrypt")
    backend = ReferenceBackend()
    result = backend.search(scrypt_work, nonce - 40, 80)
    assert result.nonces == [nonce] and result.total == 1
    assert backend.search(KernelWork(raw[:76], target), nonce - 40, 80).total == 0
    assert scrypt_work.check(nonce) and not scrypt_work.check(nonce + 1)


def test_the_pow_parameter_is_committed_and_checked():
    local = preset("local", 1)
    assert "\"pow\"" not in local.to_json()  # sha256d chains store what they always stored
    scrypt = preset("local-scrypt", 1)
    assert scrypt.pow_algorithm is SCRYPT and '"pow": "scrypt"' in scrypt.to_json()
    assert scrypt.genesis_header().hash() != replace(scrypt, pow="sha256d").genesis_header().hash()
    with pytest.raises(InvalidInput, match="scrypt"):
        ChainParams.from_json(local.to_json()[:-1] + ', "pow": "x11"}')


def test_backends_for_scrypt():
    assert [(b.name, b.kind) for b in make_backends("auto", pow="scrypt")] == [("cpu", "cpu")]
    assert [b.kind for b in make_backends("ref,cpu", threads=1, pow="scrypt")] == ["ref", "cpu"]
    for spec in ("cuda", "cuda:0"):  # no GPU here (test_cuda_scrypt_sim.py has a simulated one)
        with pytest.raises(InvalidInput, match="not available here"):
            make_backends(spec, pow="scrypt")
    with pytest.raises(InvalidInput, match="no scrypt kernel"):  # a sha256d-only backend refuses the work
        from miner.backends.base import Backend

        class Sha(Backend):
            def _search(self, work, nonce_start, count):
                return [], 0
        Sha("sha", "x").search(KernelWork(bytes(76), 1 << 250, pow="scrypt"), 0, 10)


def test_a_local_scrypt_chain_is_mined_verified_and_refuses_a_sha256d_only_block(tmp_path, scrypt_variants):
    path = tmp_path / "scrypt.sqlite"
    mined = subprocess.run([sys.executable, "-m", "miner", "mine", "--chain", str(path), "--preset", "local-scrypt",
                            "--blocks", "2", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert mined.returncode == 0, mined.stderr
    with Chain.open(path) as chain:
        assert chain.height == 2 and chain.params.pow == "scrypt"
        assert chain.verify() == 2
        for h in (1, 2):
            header = chain.header(h)
            assert int.from_bytes(scrypt_pow(header.serialize()), "little") <= bits_to_target(header.bits)
        # a block whose sha256d meets the target but whose scrypt does not
        block = chain.block(2)
        prev = chain.block(1)
        target = bits_to_target(block.header.bits)
        header = block.header
        nonce = 0
        while True:
            candidate = replace(header, nonce=nonce)
            raw = candidate.serialize()
            if int.from_bytes(SHA256D.hash(raw), "little") <= target and \
                    int.from_bytes(scrypt_pow(raw), "little") > target:
                break
            nonce += 1
        assert candidate.prev_hash == prev.hash
        with pytest.raises(InvalidBlock) as refused:
            chain.add_block(replace(block, header=candidate))
        assert refused.value.reason == "high-hash"
        assert chain.height == 2


def test_miner_header_judges_by_the_pow_asked_for():
    raw, _ = LITECOIN["block 400,000"]
    base = [sys.executable, "-m", "miner", "header", raw.hex(), "--pow-limit", "1e0fffff"]
    scrypt = subprocess.run([*base, "--pow", "scrypt", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert scrypt.returncode == 0, scrypt.stderr
    assert '"pow_hash": "00000000002e000320769e4a9403d1a6d55d0735346bebc7e0dc353e0696b3de"' in scrypt.stdout
    sha = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert sha.returncode == 1 and "pow_error" in sha.stdout


# --------------------------------------------------------------------------- the numba kernel

@pytest.mark.parametrize("name", list(__import__("miner.kernels.cpu_scrypt", fromlist=["VARIANTS"]).VARIANTS))
def test_every_variant_matches_hashlib_on_random_headers_and_partial_lane_groups(name, scrypt_variants):
    import random

    import numpy as np
    from miner.kernels import cpu_scrypt
    k = cpu_scrypt.kernel(name)
    rng = random.Random(7914)
    x, v = k.scratch()
    hashes = np.empty((k.width, 8), dtype=np.uint32)
    for n in (k.width, 1, 5):
        prefix = rng.randbytes(76)
        nonce0 = rng.randrange(1 << 32 - 5)
        k.scrypt_lanes(cpu_scrypt.prefix_words(prefix), nonce0, n, x, v, hashes)
        for lane in range(n):
            header = prefix + struct.pack("<I", nonce0 + lane)
            assert hashes[lane].astype(">u4").tobytes() == scrypt_pow(header), (name, n, lane)


def test_the_variant_choice_is_measured_once_and_kept(tmp_path, monkeypatch, scrypt_variants):
    """`auto` times every variant for real (on this CPU, whatever it is), keeps the fastest under
    this CPU's key, and reads it back the next time without timing again; a bad name is one
    clear usage error."""
    import json

    from miner.kernels import cpu_scrypt, cpu_scrypt_select

    from miner.backends.cpu_scrypt import CpuScryptBackend
    monkeypatch.setenv("MINER_CACHE", str(tmp_path))
    name, why = cpu_scrypt_select.choose("auto", remeasure=True)
    assert name in cpu_scrypt.VARIANTS and why.startswith("measured now")
    entry = json.loads((tmp_path / cpu_scrypt_select.CHOICE_FILE_NAME).read_text())[cpu_scrypt_select.choice_key()]
    assert entry["variant"] == name and set(entry["rates"]) == set(cpu_scrypt.VARIANTS)
    assert entry["rates"][name] == max(entry["rates"].values())
    if not entry["provisional"]:
        assert cpu_scrypt_select.choose("auto") == (name, "measured earlier on this CPU")
        assert cpu_scrypt_select.stored_choice() == name
    backend = CpuScryptBackend(threads=1, variant="8w")
    try:
        backend.warm_up()
        assert backend.kernel.width == 8 and "8w: 8 lanes" in backend.device
    finally:
        backend.close()
    with pytest.raises(InvalidInput, match="unknown CPU scrypt variant 'wide'"):
        CpuScryptBackend(threads=1, variant="wide")


def test_the_numba_backend_finds_litecoins_nonce_at_its_hard_target_on_two_threads(scrypt_variants):
    from miner.backends.cpu_scrypt import CpuScryptBackend
    raw, _ = LITECOIN["block 400,000"]
    nonce = struct.unpack_from("<I", raw, 76)[0]
    target = bits_to_target(struct.unpack_from("<I", raw, 72)[0])
    backend = CpuScryptBackend(threads=2, variant="16w")
    try:
        result = backend.search(KernelWork(raw[:76], target, pow="scrypt"), nonce - 37, 70)
        assert result.nonces == [nonce] and result.total == 1 and result.rejected == 0
        # an easy target: every hit the reference finds, and only those
        easy = KernelWork(raw[:76], 1 << 252, pow="scrypt")
        ours = backend.search(easy, 1000, 100)
        assert ours.nonces == ReferenceBackend().search(easy, 1000, 100).nonces[:64]
        assert ours.total == len(ReferenceBackend().search(easy, 1000, 100).nonces)
    finally:
        backend.close()


def test_compare_and_bench_take_scrypt(scrypt_variants):
    """`miner compare --pow scrypt`: hashlib and the numba kernel find the same hits on one job;
    `miner bench --pow scrypt` times each."""
    import json
    compared = subprocess.run([sys.executable, "-m", "miner", "compare", "--pow", "scrypt", "--count", "512",
                               "--seconds", "0.2", "--runs", "1", "--json"], cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
    assert compared.returncode == 0, compared.stderr[-2000:]
    report = json.loads(compared.stdout)
    assert report["agree"] and [r["backend"] for r in report["rows"]] == ["ref", "cpu"]
    assert report["rows"][0]["hits"] == report["rows"][1]["hits"] > 0
    assert "scrypt" in report["rows"][1]["device"]
    bench = subprocess.run([sys.executable, "-m", "miner", "bench", "--backend", "cpu", "--pow", "scrypt",
                            "--threads", "1", "--runs", "2", "--duration", "0.2", "--json"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert bench.returncode == 0, bench.stderr[-2000:]
    (row,) = json.loads(bench.stdout)["results"]
    assert row["setting"] == "scrypt threads=1" and row["median"] > 0


def test_a_scrypt_node_is_mined_over_getblocktemplate_with_pow_scrypt(tmp_path, scrypt_variants):
    """`miner node` on a local-scrypt chain, `miner mine --url http://... --pow scrypt`: every
    block accepted, judged by scrypt on the node; --pow where it means nothing is a usage error."""
    import json

    from support.nodeproc import NodeProcess
    chain_path = tmp_path / "scrypt.sqlite"
    with NodeProcess(chain_path, "--preset", "local-scrypt") as node:
        mined = subprocess.run([sys.executable, "-m", "miner", "mine", "--url", node.url, "--rpc-cookie-file",
                                str(node.cookie), "--pow", "scrypt", "--blocks", "2", "--threads", "1", "--json"],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert mined.returncode == 0, mined.stderr[-2000:]
        found = [json.loads(line) for line in mined.stdout.splitlines() if '"event": "block"' in line]
        assert [e["verdict"] for e in found] == ["accepted", "accepted"]
        assert node.call("getblockcount") == 2
    with Chain.open(chain_path, readonly=True) as chain:
        assert chain.verify() == 2
    usage = subprocess.run([sys.executable, "-m", "miner", "mine", "--chain", str(chain_path), "--pow", "scrypt"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "--pow is for --url" in usage.stderr


def test_a_scrypt_node_is_mined_over_stratum_by_our_client(tmp_path, scrypt_variants):
    """A local-scrypt node's Stratum server and `miner mine --url stratum+tcp://... --pow scrypt`:
    shares judged by scrypt at scrypt pools' difficulty (1 = 0xFFFF * 2^224), every one accepted."""
    import json

    from support.nodeproc import NodeProcess

    from miner.primitives.stratum import SCRYPT_DIFF1_TARGET, difficulty_to_target
    assert difficulty_to_target(1, "scrypt") == SCRYPT_DIFF1_TARGET == 0xFFFF << 224
    assert difficulty_to_target(1, "scrypt") == difficulty_to_target(1) << 16
    with NodeProcess(tmp_path / "chain.sqlite", "--preset", "local-scrypt", "--stratum-port", "0",
                     "--stratum-difficulty", "0.01") as node:
        url = f"stratum+tcp://alice.rig1:x@127.0.0.1:{node.ready['stratum_port']}"
        mined = subprocess.run([sys.executable, "-m", "miner", "mine", "--url", url, "--pow", "scrypt",
                                "--shares", "5", "--threads", "1", "--json"], cwd=ROOT, capture_output=True,
                               text=True, timeout=300)
        assert mined.returncode == 0, mined.stderr[-2000:]
        events = [json.loads(line) for line in mined.stdout.splitlines()]
        shares = [e for e in events if e["event"] == "share"]
        blocks = [e for e in events if e["event"] == "block"]  # a share that is also a block
        assert len(shares) + len(blocks) >= 5 and all(s["accepted"] for s in shares), events[-3:]
        assert all(b["verdict"] == "accepted" for b in blocks)
        # the pool's hash-rate estimate counts a scrypt difficulty-1 share as 2^16 hashes, not
        # SHA-256d's 2^32: one core's scrypt is tens of kH/s, never billions
        (worker,) = node.call("getstratuminfo")["workers"]
        assert 0 < worker["hashrate"]["1m"] < 1e7, worker
        assert all(s["difficulty"] >= s["target_difficulty"] * 0.999 for s in shares)
        assert all(abs(s["target_difficulty"] - 0.01) < 1e-9 or s["target_difficulty"] > 0.01 for s in shares)
    with Chain.open(tmp_path / "chain.sqlite", readonly=True) as chain:
        assert chain.verify() == chain.height


_BLOCK_MIX_ASM = """
import json, re
from numba import njit, types
from miner.kernels import cpu_scrypt
out = {}
for name in ("16w", "8w", "2x8w"):  # the three loop shapes: the pad layout does not touch block_mix
    fn = njit(nogil=True, boundscheck=False)(cpu_scrypt.kernel(name).block_mix.py_func)
    fn.compile((types.Array(types.uint32, 1, "C"),))
    asm = next(iter(fn.inspect_asm().values()))
    out[name] = {reg: len(re.findall(r"\\bvpaddd\\s+[^\\n]*%" + reg, asm)) for reg in ("zmm", "ymm", "xmm")}
print(json.dumps(out))
"""
# (CPU numba compiles for, has AVX-512): Intel's AVX-512 server core (whose tuning prefers 256-bit
# vectors), Intel's AVX2 desktop core, AMD's AVX-512 core.
WIDTH_TARGETS = {"icelake-server": True, "haswell": False, "znver4": True}
for _cpu in WIDTH_TARGETS:
    compile_lane.LANE_JOBS[f"scrypt_width_{_cpu}"] = lambda cpu=_cpu: compile_lane.child(_BLOCK_MIX_ASM, {
        "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(compile_lane.LANE_ROOT / f"w-{cpu}")})
compile_lane.LANE_FIXTURES["scrypt_widths"] = [f"scrypt_width_{cpu}" for cpu in WIDTH_TARGETS]


@pytest.fixture(scope="session")
def scrypt_widths():
    import json
    out = {}
    for cpu in WIDTH_TARGETS:
        rc, stdout, err = compile_lane.LANE.result(f"scrypt_width_{cpu}")
        assert rc == 0, err[-2000:]
        out[cpu] = json.loads(stdout.splitlines()[-1])
    return out


@pytest.mark.parametrize("cpu", list(WIDTH_TARGETS))
def test_each_variant_has_the_vector_width_it_was_meant_to(cpu, scrypt_widths):
    """block_mix of each loop shape compiled (never run) for an Intel AVX-512 core, an Intel
    AVX2 core and an AMD AVX-512 core, so it holds whatever CPU runs the tests: a salsa20/8 pair
    is 2 x (4 double rounds x 32 + 16) = 288 adds a lane group, all as packed instructions. 16
    lanes are 288 zmm adds where AVX-512 exists (one register a row) and ymm adds otherwise (the
    loop runs twice); 8 lanes are 288 ymm adds everywhere, and two interleaved 8-lane groups
    576, never zmm. Rounds written as a loop left it scalar; a lane count LLVM could not see
    as a constant too."""
    avx512 = WIDTH_TARGETS[cpu]
    counts = scrypt_widths[cpu]
    assert counts["16w"] == ({"zmm": 288, "ymm": 0, "xmm": 0} if avx512 else {"zmm": 0, "ymm": 288, "xmm": 0}), counts
    assert counts["8w"] == {"zmm": 0, "ymm": 288, "xmm": 0}, counts
    assert counts["2x8w"] == {"zmm": 0, "ymm": 576, "xmm": 0}, counts
