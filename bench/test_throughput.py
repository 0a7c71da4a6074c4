"""pytest-benchmark suite: `pytest bench/ --benchmark-only` (save with --benchmark-autosave).

Kernel throughput per backend on a fixed nonce range, and the host-side rates that bound a
miner: header validation and whole-chain verification.
"""

import pytest

from miner.backends.ref import ReferenceBackend
from miner.backends.registry import cuda_device_count
from miner.header import BlockHeader
from miner.work import KernelWork
from vectors import REAL_HEADERS

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
    assert benchmark(lambda: all(h.meets_target() for h in headers))


def test_chain_verify_2000_blocks(benchmark, tmp_path):
    from conftest import GENESIS_TIME, mine_easy_chain
    chain = mine_easy_chain(tmp_path / "c.sqlite", 2000)
    assert benchmark(chain.verify, GENESIS_TIME + 10_000) == 2000
    chain.close()
