"""`miner/backends/cuda_scrypt.py` in every test run, through the CuPy simulator over the host
build of kernels/scrypt.cu: Litecoin's nonce at its hard target, random headers against hashlib
with more nonces than threads, a lookup gap, the hit cap, and `auto` choosing the GPU."""

import random
import struct

import pytest
from support.cupy_sim import SimulatedFault, Simulator
from support.vectors import LITECOIN

from miner.backends import cuda, cuda_scrypt
from miner.backends.ref import reference_hits
from miner.backends.registry import make_backends
from miner.backends.work import KernelWork
from miner.primitives.compact import bits_to_target


@pytest.fixture
def sim(monkeypatch):
    s = Simulator(devices=1, sms=1)
    monkeypatch.setattr(cuda, "cupy", s)
    return s


@pytest.mark.parametrize("gap", [1, 2])
def test_litecoins_nonce_at_its_hard_target(sim, gap):
    raw, _ = LITECOIN["block 400,000"]
    nonce = struct.unpack_from("<I", raw, 76)[0]
    target = bits_to_target(struct.unpack_from("<I", raw, 72)[0])
    backend = cuda_scrypt.CudaScryptBackend(0, lookup_gap=gap, threads=64)
    result = backend.search(KernelWork(raw[:76], target, pow="scrypt"), nonce - 30, 61)
    assert result.nonces == [nonce] and result.total == 1 and result.rejected == 0
    launch = sim.launches[-1]
    assert launch.kernel == "scrypt_search" and launch.block == (64, 1, 1)
    assert launch.scalars["count"] == 61


def test_more_nonces_than_threads_and_the_hit_cap_against_hashlib(sim):
    rng = random.Random(25)
    backend = cuda_scrypt.CudaScryptBackend(0, threads=64, max_hits=3)
    work = KernelWork(rng.randbytes(76), 1 << 253, pow="scrypt")  # one nonce in eight
    start = rng.randrange(1 << 30)
    expected = reference_hits(work, start, 150)
    result = backend.search(work, start, 150)  # each thread strides over two or three nonces
    assert result.total == len(expected) > 3 and result.rejected == 0
    assert len(result.nonces) == 3 and set(result.nonces) <= set(expected)


def test_auto_takes_the_gpu_for_scrypt_and_a_sha256d_job_is_refused(sim):
    (backend,) = make_backends("auto", pow="scrypt")
    assert isinstance(backend, cuda_scrypt.CudaScryptBackend) and backend.threads == 2048  # 1 SM resident
    with pytest.raises(Exception, match="no sha256d kernel"):
        backend.search(KernelWork(bytes(76), 1 << 250), 0, 10)


def test_the_simulator_catches_a_wrong_argument(sim, monkeypatch):
    """The checks can fail: a Python int where the kernel reads 32 bits is refused, as a GPU
    would read it wrong."""
    backend = cuda_scrypt.CudaScryptBackend(0, threads=64)
    backend.warm_up()
    real = backend._kernel

    def wrong(grid, block, args):
        return real(grid, block, (int(args[0]),) + args[1:])
    monkeypatch.setattr(backend, "_kernel", wrong)
    with pytest.raises(SimulatedFault, match="Python int"):
        backend.search(KernelWork(bytes(76), 1 << 250, pow="scrypt"), 0, 10)


def test_the_lookup_gap_reaches_the_kernel_from_the_registry(sim):
    """`--lookup-gap` travels from the command line's registry call to NVRTC's -DLOOKUP_GAP."""
    (backend,) = make_backends("cuda", pow="scrypt", lookup_gap=4)
    assert backend.lookup_gap == 4 and "lookup gap 4" in backend.device
    backend.threads = 64
    raw, _ = LITECOIN["block 400,000"]
    nonce = struct.unpack_from("<I", raw, 76)[0]
    target = bits_to_target(struct.unpack_from("<I", raw, 72)[0])
    assert backend.search(KernelWork(raw[:76], target, pow="scrypt"), nonce - 3, 7).nonces == [nonce]
    assert "-DLOOKUP_GAP=4" in backend._module.options
    assert len(backend._pad) == 64 * (1024 // 4) * 32
