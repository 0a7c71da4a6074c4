"""The CUDA kernel without a GPU: its own source run on the CPU, compiled for real GPU targets,
and statically analysed; plus the real launch path, where CuPy sees a device."""

import ctypes
import random
import shutil
import subprocess

import numpy as np
import pytest
from miner.bench import sass
from miner.kernels.cuda_job import (
    HOST_LAUNCH,
    KERNEL_NAME,
    NVRTC_OPTIONS,
    SOURCE,
    job_words,
)
from support.nvrtc import CUPY_ADDED_OPTIONS, NVRTC_DISTRIBUTIONS, installed, load_nvrtc
from support.vectors import REAL_HEADERS

from miner.backends.ref import reference_hits
from miner.backends.registry import cuda_device_count
from miner.backends.work import KernelWork
from miner.primitives.header import BlockHeader

ARCHES = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90"]
MAX_HITS = 64


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    """sha256d.cu built as C++ with the host shim, loaded through ctypes."""
    gxx = shutil.which("g++") or shutil.which("c++")
    if gxx is None:
        pytest.skip("no C++ compiler to build the host shim")
    lib_path = tmp_path_factory.mktemp("hostkernel") / "sha256d_host.so"
    subprocess.run([gxx, "-O2", "-shared", "-fPIC", "-I", str(SOURCE.parent), str(HOST_LAUNCH), "-o", str(lib_path)],
                   check=True)
    lib = ctypes.CDLL(str(lib_path))
    u32p = ctypes.POINTER(ctypes.c_uint32)
    lib.host_launch.argtypes = [ctypes.c_uint32, ctypes.c_uint32, u32p, ctypes.c_uint32, ctypes.c_uint32,
                                ctypes.c_uint32, u32p, ctypes.c_uint32]

    def run(work, start, count, grid=3, block=32, max_hits=MAX_HITS):
        threads = grid * block
        job = job_words(work)
        hits = np.zeros(1 + max_hits + 8, dtype=np.uint32)  # 8 guard words past the buffer
        hits[1 + max_hits:] = 0xDEADBEEF
        lib.host_launch(grid, block, job.ctypes.data_as(u32p), start, count, -(-count // threads),
                        hits.ctypes.data_as(u32p), max_hits)
        assert (hits[1 + max_hits:] == 0xDEADBEEF).all(), "kernel wrote past the hit buffer"
        total = int(hits[0])
        return sorted(int(x) for x in hits[1:1 + min(total, max_hits)]), total

    return run


def check_against_reference(run, work, start, count, **kw):
    nonces, total = run(work, start, count, **kw)
    expected = reference_hits(work, start, count)
    assert total == len(expected)
    if total <= MAX_HITS:
        assert nonces == expected
    else:  # only the first MAX_HITS reported are kept, in launch order: all must be real hits
        assert len(nonces) == MAX_HITS and set(nonces) <= set(expected)


@pytest.mark.parametrize("height,hexstr,expected", REAL_HEADERS)
def test_host_build_finds_real_nonces(host_kernel, height, hexstr, expected):
    header = BlockHeader.from_hex(hexstr)
    work = KernelWork(header.serialize()[:76], header.target())
    start = max(0, header.nonce - 3000)
    assert host_kernel(work, start, 6000) == ([header.nonce], 1)


@pytest.mark.parametrize("seed", range(8))
def test_host_build_random_headers_and_targets(host_kernel, seed):
    rng = random.Random(1000 + seed)
    target = rng.choice([(1 << 256) - 1, rng.getrandbits(255) | 1 << 254, rng.getrandbits(249), rng.getrandbits(244)])
    work = KernelWork(rng.randbytes(76), target)
    start = rng.choice([0, rng.randrange(2**32 - 20_000), 2**32 - 20_000])
    count = rng.randrange(1, 20_000)
    check_against_reference(host_kernel, work, start, min(count, 2**32 - start), grid=rng.choice([1, 2, 5]),
                            block=rng.choice([1, 32, 64]))


def test_host_build_full_comparison_decides(host_kernel):
    """Target = the smallest hash in the range: a hit; one less: none. Only the low limbs differ."""
    work = KernelWork(bytes(range(76)), 1)
    best = min(range(700, 800), key=work.hash_int)
    h = work.hash_int(best)
    assert host_kernel(KernelWork(work.header_prefix, h), 700, 100) == ([best], 1)
    assert host_kernel(KernelWork(work.header_prefix, h - 1), 700, 100) == ([], 0)


def test_host_build_easy_target_counts_all_and_stays_in_bounds(host_kernel):
    work = KernelWork(bytes(76), (1 << 256) - 1)
    nonces, total = host_kernel(work, 2**32 - 5000, 5000)
    assert total == 5000 and len(nonces) == MAX_HITS


def test_host_build_count_up_to_the_last_nonce(host_kernel):
    """A range ending at 2^32-1 with more threads than nonces: no wrap, nothing hashed twice."""
    work = KernelWork(bytes(range(1, 77)), 1 << 254)
    check_against_reference(host_kernel, work, 2**32 - 100, 100, grid=4, block=64)


def test_planted_schedule_bug_is_caught(host_kernel, tmp_path):
    """The comparison can fail: an off-by-one in one schedule word changes the hits."""
    broken = tmp_path / "sha256d.cu"
    broken.write_text(SOURCE.read_text().replace("w[17] = job[JOB_W17];", "w[17] = job[JOB_W17] + 1;"))
    (tmp_path / "cuda_host_shim.h").write_text((SOURCE.parent / "cuda_host_shim.h").read_text())
    launch = tmp_path / "launch.cpp"
    launch.write_text(HOST_LAUNCH.read_text())
    lib_path = tmp_path / "broken.so"
    subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-I", str(tmp_path), str(launch), "-o", str(lib_path)],
                   check=True)
    lib = ctypes.CDLL(str(lib_path))
    u32p = ctypes.POINTER(ctypes.c_uint32)
    work = KernelWork(bytes(76), 1 << 252)
    hits = np.zeros(1 + MAX_HITS, dtype=np.uint32)
    lib.host_launch(ctypes.c_uint32(1), ctypes.c_uint32(32), job_words(work).ctypes.data_as(u32p), ctypes.c_uint32(0),
                    ctypes.c_uint32(8192), ctypes.c_uint32(256), hits.ctypes.data_as(u32p), ctypes.c_uint32(MAX_HITS))
    assert sorted(hits[1:1 + min(hits[0], MAX_HITS)].tolist()) != reference_hits(work, 0, 8192)[:MAX_HITS]


# ---------------------------------------------------------------- real GPU targets, no GPU needed

NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ARCHES)
def test_compiles_for_gpu_target_without_spills(arch, tmp_path):
    try:
        _, report = sass.compile_cubin(arch, tmp_path)
    except RuntimeError as exc:
        if "Unsupported gpu architecture" in str(exc):
            pytest.skip(f"this nvcc no longer targets {arch} (CUDA 13 dropped Volta): {exc}")
        raise
    usage = sass.ptxas_usage(report)
    print(f"{arch}: {usage}")
    assert usage["stack_bytes"] == 0 and usage["spill_bytes"] == 0
    assert usage["registers"] <= 64


def test_an_nvrtc_that_does_not_load_fails_the_compile_tests_where_the_extra_is_installed(monkeypatch):
    """A broad except used to turn any NVRTC or CuPy failure into a skip: a broken install of the
    test extra silently dropped the compile tests."""
    if not all(installed(d) for d in NVRTC_DISTRIBUTIONS):
        pytest.skip("the test extra's CuPy and NVRTC are not installed here")
    from cupy_backends.cuda.libs import nvrtc

    def broken():
        raise OSError("libnvrtc.so.13: cannot open shared object file")
    monkeypatch.setattr(nvrtc, "getVersion", broken)
    with pytest.raises(pytest.fail.Exception, match="broken install"):
        load_nvrtc()


@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90"])
def test_nvrtc_compiles_the_kernel_with_the_backend_options(arch):
    """The product compiles sha256d.cu with NVRTC at run time: a source NVRTC rejects must fail
    here, on a machine with no GPU, not on the user's."""
    nvrtc = load_nvrtc()
    options = list(NVRTC_OPTIONS) + list(CUPY_ADDED_OPTIONS) + [f"-arch={arch}"]
    prog = nvrtc.createProgram(SOURCE.read_text(), "sha256d.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, options)
        except Exception as exc:
            pytest.fail(f"NVRTC rejected the kernel for {arch}: {exc}\n{nvrtc.getProgramLog(prog)}")
        cubin = nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    assert cubin[:4] == b"\x7fELF"  # real SASS for that target, not PTX
    assert KERNEL_NAME.encode() in cubin and b"c_job" in cubin


def test_nvrtc_rejects_a_broken_kernel():
    """The NVRTC test can fail: a source with an undeclared name does not compile."""
    nvrtc = load_nvrtc()
    prog = nvrtc.createProgram(SOURCE.read_text().replace("w[17] = job[JOB_W17];", "w[17] = job[JOB_W99];"),
                               "sha256d.cu", [], [])
    try:
        with pytest.raises(Exception):  # noqa: B017 (CuPy's NVRTC error class differs by version)
            nvrtc.compileProgram(prog, list(NVRTC_OPTIONS) + ["-arch=sm_90"])
        assert "JOB_W99" in nvrtc.getProgramLog(prog)
    finally:
        nvrtc.destroyProgram(prog)


def _sass_tools():
    try:
        sass.find_tool("cuobjdump"), sass.find_tool("nvdisasm")
    except FileNotFoundError as exc:
        return str(exc)
    return None


@pytest.mark.skipif(NVCC is None or _sass_tools() is not None,
                    reason=f"needs nvcc, cuobjdump and nvdisasm: {_sass_tools()}")
def test_sass_instruction_budget_sm90():
    report = sass.analyse("sm_90")
    print(f"sm_90: {report.per_nonce} instructions per nonce, {report.by_pipe}")
    assert report.stack_bytes == 0 and report.spill_bytes == 0
    assert report.per_nonce <= 2480
    # The schedule's right shifts run on the FMA pipe (IMAD.HI); before that the ALU pipe carried
    # 2,231 per nonce. A change that lets ptxas fold them back into shifts fails here.
    assert report.by_pipe["alu"] <= 2080 and report.by_opcode.get("IMAD.HI.U32", 0) >= 150
    assert report.by_pipe["alu"] + report.by_pipe["fma"] + report.by_pipe.get("control", 0) == report.per_nonce
    h100 = report.predictions()[0]
    assert h100["device"] == "H100 SXM"
    assert h100["predicted_ghs"] == min(h100["issue_bound_ghs"], h100["alu_bound_ghs"], h100["fma_bound_ghs"])


# ---------------------------------------------------------------- the real launch path

_CUDA_COUNT, _CUDA_WHY = cuda_device_count()
gpu = pytest.mark.skipif(_CUDA_COUNT == 0, reason=f"no GPU: {_CUDA_WHY}")


@pytest.mark.gpu
@gpu
def test_gpu_matches_reference_on_random_work():
    from miner.backends.cuda import CudaBackend
    backend = CudaBackend(0)
    rng = random.Random(5)
    for _ in range(6):
        work = KernelWork(rng.randbytes(76), rng.choice([rng.getrandbits(250), rng.getrandbits(255) | 1 << 254]))
        start = rng.choice([0, 2**32 - 50_000])
        result = backend.search(work, start, 50_000)
        expected = reference_hits(work, start, 50_000)
        assert result.total == len(expected) and result.rejected == 0
        assert set(result.nonces) <= set(expected) and len(result.nonces) == min(64, len(expected))


@pytest.mark.gpu
@gpu
def test_gpu_finds_real_block_nonce():
    from miner.backends.cuda import CudaBackend
    backend = CudaBackend(0)
    header = BlockHeader.from_hex(REAL_HEADERS[2][1])
    work = KernelWork(header.serialize()[:76], header.target())
    result = backend.search(work, header.nonce - 10_000_000, 20_000_000)
    assert result.nonces == [header.nonce]


@pytest.mark.gpu
@gpu
def test_gpu_bench_scales_launch_shapes_and_reports_switch_latency():
    """`miner bench` on a GPU: one row per launch shape, each the same kernel giving a positive
    rate, a prediction beside it where nvcc is present, and the job-switch latency measured."""
    import json
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "miner", "bench", "--backend", "cuda:0", "--launch",
                           "256x16,256x64", "--runs", "2", "--duration", "0.2", "--switches", "3",
                           "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [r["setting"] for r in data["results"]] == ["block=256 npt=16", "block=256 npt=64"]
    assert all(r["median"] > 1e8 for r in data["results"])
    assert len(data["job_switch"]["samples"]) == 3


@pytest.mark.gpu
@gpu
def test_gpu_set_launch_rejects_bad_shapes():
    from miner.backends.cuda import CudaBackend
    from miner.errors import InvalidInput
    backend = CudaBackend(0)
    with pytest.raises(InvalidInput):
        backend.set_launch(100, 64)
    backend.set_launch(128, 16)
    work = KernelWork(bytes(76), (1 << 256) - 1)  # every nonce a hit: coverage is countable
    assert backend.search(work, 5, 10_000).total == 10_000


@pytest.mark.gpu
@gpu
def test_gpu_autotunes_once_and_caches(tmp_path, monkeypatch):
    """First use on a device autotunes and writes the cache; a new backend starts from it."""
    from miner.backends import cuda
    monkeypatch.setattr(cuda, "TUNING_FILE", tmp_path / "cuda-launch.json")
    first = cuda.CudaBackend(0)
    assert first.shape_source == "default"
    first.warm_up()
    assert first.shape_source == "cache" and (tmp_path / "cuda-launch.json").exists()
    second = cuda.CudaBackend(0)
    assert second.shape_source == "cache"
    assert (second.block, second.nonces_per_thread) == (first.block, first.nonces_per_thread)
