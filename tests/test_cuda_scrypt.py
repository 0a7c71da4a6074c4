"""The CUDA scrypt kernel (kernels/scrypt.cu) without a GPU: its own source built as C++ and run
on the CPU against hashlib.scrypt (every lookup gap), compiled by nvcc and by NVRTC for real
GPU targets, and the bandwidth model beside it."""

import ctypes
import random
import shutil
import struct
import subprocess

import numpy as np
import pytest
from miner.bench import scrypt_model
from miner.kernels.cuda_scrypt_job import (
    HOST_LAUNCH,
    KERNEL_NAME,
    SOURCE,
    job_words,
    nvrtc_options,
    pad_words,
)
from support.nvrtc import CUPY_ADDED_OPTIONS, load_nvrtc
from support.vectors import LITECOIN

from miner.backends.ref import reference_hits
from miner.backends.work import KernelWork
from miner.primitives.compact import bits_to_target
from miner.primitives.header import target_words

MAX_HITS = 16


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """scrypt.cu built as C++ with the host shim, once per lookup gap, loaded through ctypes."""
    gxx = shutil.which("g++") or shutil.which("c++")
    if gxx is None:
        pytest.skip("no C++ compiler to build the host shim")
    folder = tmp_path_factory.mktemp("scrypt-host")
    u32p = ctypes.POINTER(ctypes.c_uint32)
    libs = {}
    for gap in (1, 2, 4):
        path = folder / f"scrypt_host_{gap}.so"
        subprocess.run([gxx, "-O2", "-shared", "-fPIC", f"-DLOOKUP_GAP={gap}", "-I", str(SOURCE.parent),
                        str(HOST_LAUNCH), "-o", str(path)], check=True)
        lib = ctypes.CDLL(str(path))
        lib.host_launch.argtypes = [ctypes.c_uint32, ctypes.c_uint32, u32p, ctypes.c_uint32, ctypes.c_uint32,
                                    u32p, u32p, ctypes.c_uint32]
        assert lib.host_lookup_gap() == gap
        libs[gap] = lib

    def run(gap, prefix, target, start, count, grid=2, block=3):
        lib = libs[gap]
        pad = np.zeros(pad_words(grid * block, gap) + 64, dtype=np.uint32)
        pad[-64:] = 0xDEADBEEF  # guard words past the scratchpad
        hits = np.zeros(1 + MAX_HITS + 8, dtype=np.uint32)
        hits[1 + MAX_HITS:] = 0xDEADBEEF
        job = job_words(prefix, target_words(target))
        lib.host_launch(grid, block, job.ctypes.data_as(u32p), start, count, pad.ctypes.data_as(u32p),
                        hits.ctypes.data_as(u32p), MAX_HITS)
        assert (pad[-64:] == 0xDEADBEEF).all(), "kernel wrote past its scratchpad"
        assert (hits[1 + MAX_HITS:] == 0xDEADBEEF).all(), "kernel wrote past the hit buffer"
        total = int(hits[0])
        return sorted(int(x) for x in hits[1:1 + min(total, MAX_HITS)]), total

    return run


@pytest.mark.parametrize("gap", [1, 2, 4])
def test_host_build_finds_litecoins_nonce_at_its_hard_target(host_kernels, gap):
    raw, _ = LITECOIN["block 400,000"]
    nonce = struct.unpack_from("<I", raw, 76)[0]
    target = bits_to_target(struct.unpack_from("<I", raw, 72)[0])
    assert host_kernels(gap, raw[:76], target, nonce - 5, 11) == ([nonce], 1)


@pytest.mark.parametrize("gap", [1, 4])
def test_host_build_matches_hashlib_at_an_easy_target_on_random_headers(host_kernels, gap):
    """Every hit and only the hits hashlib finds, more threads than nonces and fewer, the
    grid-stride split included."""
    rng = random.Random(gap)
    for count, grid, block in ((13, 2, 3), (5, 4, 4)):
        prefix = rng.randbytes(76)
        start = rng.randrange(1 << 31)
        target = 1 << 253  # one nonce in eight
        work = KernelWork(prefix, target, pow="scrypt")
        expected = reference_hits(work, start, count)
        assert host_kernels(gap, prefix, target, start, count, grid, block) == (expected, len(expected))


def test_the_host_test_can_fail(host_kernels):
    """A target one below a hit's hash is refused: the comparison is the full 256 bits."""
    raw, _ = LITECOIN["block 400,000"]
    nonce = struct.unpack_from("<I", raw, 76)[0]
    from miner.consensus.pow import scrypt_pow
    value = int.from_bytes(scrypt_pow(raw), "little")
    assert host_kernels(1, raw[:76], value, nonce, 1) == ([nonce], 1)
    assert host_kernels(1, raw[:76], value - 1, nonce, 1) == ([], 0)


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_for_gpu_targets(arch, tmp_path):
    out = tmp_path / f"scrypt_{arch}.cubin"
    proc = subprocess.run([NVCC, "-cubin", f"-arch={arch}", "-O3", "-std=c++17", "-DLOOKUP_GAP=2", "-o", str(out),
                           str(SOURCE), "-Xptxas", "-v"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:4] == b"\x7fELF" and KERNEL_NAME.encode() in out.read_bytes()


@pytest.mark.parametrize("gap", [1, 2])
def test_nvrtc_compiles_the_kernel_for_hopper(gap):
    nvrtc = load_nvrtc()
    options = list(nvrtc_options(gap)) + list(CUPY_ADDED_OPTIONS) + ["-arch=sm_90"]
    prog = nvrtc.createProgram(SOURCE.read_text(), "scrypt.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, options)
        except Exception as exc:
            pytest.fail(f"NVRTC rejected the scrypt kernel: {exc}\n{nvrtc.getProgramLog(prog)}")
        cubin = nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    assert cubin[:4] == b"\x7fELF" and KERNEL_NAME.encode() in cubin


def test_bandwidth_model():
    h200 = scrypt_model.DEVICES["H200"]
    plain = scrypt_model.predict(h200, lookup_gap=1)
    # 1,024 rows of 128 bytes written and 1,024 read per hash: 256 KiB moved
    assert plain.bytes_per_hash == 262_144
    assert plain.memory_bound_hps == pytest.approx(h200.bandwidth / 262_144)
    assert plain.bound in ("memory", "compute")
    gapped = scrypt_model.predict(h200, lookup_gap=4)
    # a gap of 4 writes a quarter of the rows, still reads 1,024, and recomputes 1.5 BlockMix a read
    assert gapped.bytes_per_hash == 131_072 // 4 + 131_072
    assert gapped.ops_per_hash > plain.ops_per_hash
    assert gapped.memory_bound_hps > plain.memory_bound_hps
    assert scrypt_model.predict(h200, 1).predicted_hps == min(plain.memory_bound_hps, plain.compute_bound_hps)
