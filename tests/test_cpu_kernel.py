"""The numba CPU kernel: bit-exact against hashlib, vectorized, and portable."""

import os
import random
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from miner.kernels import cpu as kernel
from miner.kernels.gen_cpu_kernel import OUT, generate
from miner.backends.cpu import CpuBackend
from miner.backends.ref import reference_hits
from miner.errors import UsageError
from miner.header import BlockHeader, target_words
from miner.work import KernelWork
from vectors import REAL_HEADERS


@pytest.fixture(scope="module")
def backend():
    b = CpuBackend(threads=2)
    b.warm_up()
    yield b
    b.close()


def test_generated_kernel_is_current():
    assert OUT.read_text() == generate(), "run: python -m miner.kernels.gen_cpu_kernel"


@pytest.mark.parametrize("height,hexstr,expected", REAL_HEADERS)
def test_real_headers_found_at_their_nonce(backend, height, hexstr, expected):
    header = BlockHeader.from_hex(hexstr)
    work = KernelWork(header.serialize()[:76], header.target())
    start = max(0, header.nonce - 5000)
    count = min(10_000, 2**32 - start)
    result = backend.search(work, start, count)
    assert result.nonces == [header.nonce] and result.total == 1
    assert reference_hits(work, start, count) == [header.nonce]


def _random_target(rng):
    """Targets from regtest-easy (most nonces hit) down to ones that need the low limbs."""
    return rng.choice([
        (1 << 256) - 1,                        # every nonce hits
        rng.getrandbits(255) | (1 << 254),     # about half hit
        rng.getrandbits(248) | (1 << 246),
        rng.getrandbits(243),
    ])


@pytest.mark.parametrize("seed", range(6))
def test_random_headers_and_targets_match_reference(backend, seed):
    rng = random.Random(seed)
    work = KernelWork(rng.randbytes(76), _random_target(rng))
    start = rng.choice([0, rng.randrange(2**32 - 30_000), 2**32 - 30_000])
    count = rng.randrange(1, 30_000)
    if start + count > 2**32:
        count = 2**32 - start
    backend.max_hits = 1 << 16
    try:
        result = backend.search(work, start, count)
    finally:
        backend.max_hits = 64
    expected = reference_hits(work, start, count)
    assert result.total == len(expected)
    assert result.nonces == expected
    assert result.rejected == 0


def test_range_ending_at_last_nonce(backend):
    work = KernelWork(bytes(range(76)), 1 << 252)
    result = backend.search(work, 2**32 - 4099, 4099)
    assert result.nonces == reference_hits(work, 2**32 - 4099, 4099)[:64]
    assert result.total == len(reference_hits(work, 2**32 - 4099, 4099))


def test_full_256_bit_comparison_decides():
    """A target equal to one hash in its top 224 bits: only the low limbs separate hit from miss."""
    rng = random.Random(42)
    work0 = KernelWork(rng.randbytes(76), 1)
    h = work0.hash_int(1234)
    exact = KernelWork(work0.header_prefix, h)        # hash == target: a hit (<=)
    below = KernelWork(work0.header_prefix, h - 1)    # one less: a miss, same top limbs
    job = kernel.job_array(exact.midstate, exact.tail)
    out = np.zeros(4, dtype=np.int64)
    assert kernel.search(job, kernel.target_array(exact.target_words), 1234, 1, out) == 1
    assert kernel.search(job, kernel.target_array(below.target_words), 1234, 1, out) == 0
    assert target_words(h)[7] == target_words(h - 1)[7]


def test_hits_are_capped_but_counted(backend):
    work = KernelWork(bytes(76), (1 << 256) - 1)
    result = backend.search(work, 1000, 50_000)
    assert result.total == 50_000 and len(result.nonces) == 64 and result.nonces[0] == 1000


@pytest.mark.parametrize("start,count", [(0, 0), (5, -1), (2**32 - 1, 2), (-1, 10)])
def test_bad_ranges_rejected(backend, start, count):
    with pytest.raises(UsageError):
        backend.search(KernelWork(bytes(76), 1 << 255), start, count)


def test_bad_work_rejected():
    with pytest.raises(UsageError, match="76 bytes"):
        KernelWork(bytes(75), 1 << 255)
    with pytest.raises(UsageError, match="target"):
        KernelWork(bytes(76), 0)


def _host_has_avx512():
    import llvmlite.binding as llvm
    return "+avx512f" in llvm.get_host_cpu_features().flatten()


def test_hot_loop_is_vectorized():
    """Recompile the hot loop without the cache and read its assembly: it must stay SIMD."""
    from numba import njit
    fn = njit(nogil=True, boundscheck=False)(kernel.count_candidates.py_func)
    fn(np.zeros(11, np.uint32), np.uint32(0), 8, np.uint32(0))
    asm = next(iter(fn.inspect_asm().values()))
    if _host_has_avx512():
        assert len(re.findall(r"vprold\s+[^\n]*zmm", asm)) > 1000, "rotates are not 16-lane zmm rotates"
        assert len(re.findall(r"vpternlogd\s+[^\n]*zmm", asm)) > 500, "3-input logic not fused"
    else:
        assert len(re.findall(r"\b(vpaddd|paddd)\b", asm)) > 500, "hot loop is not vectorized"


def test_runs_on_a_cpu_without_avx512(tmp_path):
    """numba compiles for the host CPU; a baseline x86-64-v2 build must still be bit-exact."""
    code = textwrap.dedent("""
        import numpy as np
        from miner.kernels import cpu
        from miner.backends.ref import reference_hits
        from miner.work import KernelWork
        w = KernelWork(bytes(range(76)), 1 << 250)
        out = np.zeros(64, np.int64)
        n = cpu.search(cpu.job_array(w.midstate, w.tail), cpu.target_array(w.target_words), 0, 9001, out)
        ref = reference_hits(w, 0, 9001)
        assert n == len(ref) and list(out) == ref[:64], (n, ref)
        print("ok", n)
    """)
    env = dict(os.environ, NUMBA_CPU_NAME="x86-64-v2", NUMBA_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ok")
