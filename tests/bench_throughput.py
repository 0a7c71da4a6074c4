"""pytest-benchmark suite, not part of the test run: `pytest tests/bench_throughput.py --benchmark-only`
(save with --benchmark-autosave).

Kernel throughput per backend on a fixed nonce range, and the host-side rates that bound a
miner: header validation and whole-chain verification.
"""

import json
import subprocess
import sys

import pytest
from miner.bench.chain_verify import GENESIS_TIME, build_easy_chain
from support.vectors import REAL_HEADERS

from miner.backends.ref import ReferenceBackend
from miner.backends.registry import cuda_device_count
from miner.backends.work import KernelWork
from miner.consensus.pow import header_meets_pow
from miner.primitives.header import BlockHeader

WORK = KernelWork(bytes(range(76)), 1)  # no hits: the fast path only


def test_ref_backend_65k_nonces(benchmark):
    backend = ReferenceBackend()
    result = benchmark(backend.search, WORK, 0, 1 << 16)
    assert result.total == 0


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_backend_16m_nonces(benchmark, threads):
    from miner.backends.cpu import CpuBackend
    backend = CpuBackend(threads=threads)
    backend.warm_up()
    result = benchmark.pedantic(backend.search, args=(WORK, 0, 1 << 24), rounds=5, warmup_rounds=1)
    assert result.total == 0
    backend.close()


@pytest.mark.skipif(cuda_device_count()[0] == 0, reason=f"no GPU: {cuda_device_count()[1]}")
def test_cuda_backend_4g_nonces(benchmark):
    from miner.backends.cuda import CudaBackend
    backend = CudaBackend(0)
    backend.warm_up()
    result = benchmark.pedantic(backend.search, args=(WORK, 0, (1 << 32) - 1), rounds=5, warmup_rounds=1)
    assert result.total == 0


def test_header_validation(benchmark):
    headers = [BlockHeader.from_hex(h) for _, h, _ in REAL_HEADERS]
    assert benchmark(lambda: all(header_meets_pow(h.serialize()) for h in headers))


def test_chain_verify_2000_blocks(benchmark, tmp_path):
    chain = build_easy_chain(tmp_path / "c.sqlite", 2000)
    assert benchmark(chain.verify, GENESIS_TIME + 10_000) == 2000
    chain.close()


@pytest.fixture(scope="module")
def chain_100k(tmp_path_factory):
    """A real 100,000-block chain (about half a minute to mine and store)."""
    path = tmp_path_factory.mktemp("chain") / "100k.sqlite"
    build_easy_chain(path, 100_000).close()
    return path


def test_cli_chain_verify_100k_blocks(benchmark, chain_100k):
    """`miner chain verify` as a user runs it: a fresh process that opens, indexes and re-validates
    100,000 blocks from genesis (the issue asks for under 10 s on the 2-core development machine)."""
    proc = benchmark.pedantic(
        subprocess.run, args=([sys.executable, "-m", "miner", "chain", "verify", "--json", "--chain",
                               str(chain_100k)],), kwargs={"capture_output": True, "text": True},
        rounds=3, warmup_rounds=1)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["height"] == 100_000
