"""`miner/backends/cuda.py` in every test run, through the CuPy simulator over the host build.

The simulator (tests/support/cupy_sim.py) is tested first against the host build it wraps; then the real
backend runs on it: random works, shapes and ranges against the reference, the hit cap, cancel
and stop-on-hit, autotune and its cache, two devices, and `miner mine`/`compare`/`bench` as
subprocesses. Planted faults show the checks can fail.
"""

import ctypes
import json
import os
import random
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from miner.kernels.cuda_job import KERNEL_NAME, job_words, source_text
from support import TESTS, cupy_sim, program
from support.cupy_sim import CUDADriverError, SimulatedFault, Simulator

from miner.backends import cuda
from miner.backends.ref import reference_hits
from miner.backends.work import KernelWork

EASY = (1 << 256) - 1  # every nonce a hit


@pytest.fixture
def sim(monkeypatch, tmp_path):
    """One simulated GPU in place of CuPy, and a private tuning cache."""
    s = Simulator(devices=1, sms=2)
    monkeypatch.setattr(cuda, "cupy", s)
    monkeypatch.setattr(cuda, "TUNING_FILE", tmp_path / "cuda-launch.json")
    return s


def tuned_backend(module=cuda, **kw):
    """A backend at a fixed small shape, so nothing autotunes unless a test asks for it."""
    b = module.CudaBackend(0, **kw)
    b.set_launch(64, 16)
    return b


def check_against_reference(backend, work, start, count):
    result = backend.search(work, start, count)
    expected = reference_hits(work, start, count)
    assert result.rejected == 0, "the backend returned nonces that are not hits"
    assert result.total == len(expected) and result.count == count
    if len(expected) <= backend.max_hits:
        assert result.nonces == expected
    else:
        assert len(result.nonces) == backend.max_hits and set(result.nonces) <= set(expected)


# ---------------------------------------------------------------- the simulator itself

def _module_and_job(s, work):
    module = s.RawModule(code=source_text(), options=("-std=c++17",))
    module.get_global("c_job").copy_from_host(job_words(work).ctypes.data, job_words(work).nbytes)
    return module, module.get_function(KERNEL_NAME)


def test_simulator_launch_equals_the_host_build_called_directly():
    """The same launch through the simulator and through the library's own host_launch."""
    s = Simulator()
    rng = random.Random(7)
    for _ in range(4):
        work = KernelWork(rng.randbytes(76), rng.choice([rng.getrandbits(250), rng.getrandbits(254), EASY]))
        start, count, grid, block = rng.randrange(2**32 - 5000), 5000, rng.choice([1, 3]), rng.choice([32, 64])
        per_thread = -(-count // (grid * block))
        module, kernel = _module_and_job(s, work)
        hits = s.zeros(1 + 64, dtype=s.uint32)
        kernel((grid,), (block,), (np.uint32(start), np.uint32(count), np.uint32(per_thread), hits, np.uint32(64)))
        direct = np.zeros(1 + 64, dtype=np.uint32)
        u32p = ctypes.POINTER(ctypes.c_uint32)
        module.lib.host_launch.argtypes = ([ctypes.c_uint32] * 2 + [u32p] + [ctypes.c_uint32] * 3
                                           + [u32p, ctypes.c_uint32])
        module.lib.host_launch(grid, block, job_words(work).ctypes.data_as(u32p), start, count, per_thread,
                               direct.ctypes.data_as(u32p), 64)
        assert hits.get().tolist() == direct.tolist()
        assert int(direct[0]) == len(reference_hits(work, start, count))
    assert [launch.grid[0] for launch in s.launches] and all(not launch.sampled for launch in s.launches)


@pytest.mark.parametrize("args,fault", [
    (lambda h: (0, np.uint32(100), np.uint32(4), h, np.uint32(64)), "Python int is passed as 8 bytes"),
    (lambda h: (np.uint64(0), np.uint32(100), np.uint32(4), h, np.uint32(64)), "uint64 (8 bytes)"),
    (lambda h: (np.uint32(0), np.uint32(100), np.uint32(4), np.uint32(0), np.uint32(64)), "pointer parameter"),
    (lambda h: (np.uint32(0), np.uint32(100), np.uint32(4), h), "takes 5 arguments"),
    # A capacity above the buffer's: the easy target makes the kernel fill all of it.
    (lambda h: (np.uint32(0), np.uint32(500), np.uint32(8), h, np.uint32(200)), "past the end"),
])
def test_simulator_raises_where_a_gpu_would_misbehave(args, fault):
    s = Simulator()
    _, kernel = _module_and_job(s, KernelWork(bytes(76), EASY))
    hits = s.zeros(1 + 64, dtype=s.uint32)
    with pytest.raises(SimulatedFault, match=re.escape(fault)):
        kernel((2,), (32,), args(hits))


def test_simulator_traps_a_zero_divisor_and_checks_devices_and_limits():
    s = Simulator(devices=2)
    _, kernel = _module_and_job(s, KernelWork(bytes(76), 1))
    hits = s.zeros(65, dtype=s.uint32)
    # 2^24 blocks of 256 threads: the kernel's 32-bit thread count is 0 and it divides by it.
    with pytest.raises(SimulatedFault, match="division by zero"):
        kernel((1 << 24,), (256,), (np.uint32(0), np.uint32(2**32 - 1), np.uint32(1), hits, np.uint32(64)))
    with pytest.raises(CUDADriverError, match="threads per block"):
        kernel((1,), (2048,), (np.uint32(0), np.uint32(10), np.uint32(1), hits, np.uint32(64)))
    with s.cuda.Device(1):
        other = s.zeros(65, dtype=s.uint32)
    with pytest.raises(SimulatedFault, match="on device 1"):
        kernel((1,), (32,), (np.uint32(0), np.uint32(10), np.uint32(1), other, np.uint32(64)))
    module = s.RawModule(code=source_text(), options=())
    with pytest.raises(cupy_sim.CUDARuntimeError, match="copy of 200 bytes"):
        module.get_global("c_job").copy_from_host(np.zeros(50, np.uint32).ctypes.data, 200)
    with pytest.raises(CUDADriverError, match="not found"):
        module.get_function("no_such_kernel")


# ---------------------------------------------------------------- the backend on the simulator

@pytest.mark.parametrize("seed", range(6))
def test_backend_matches_reference_on_random_work_shapes_and_ranges(sim, seed):
    rng = random.Random(seed)
    backend = tuned_backend()
    backend.set_launch(rng.choice([32, 64, 128]), rng.choice([1, 4, 16, 64]))
    for _ in range(3):
        work = KernelWork(rng.randbytes(76), rng.choice([EASY, rng.getrandbits(255), rng.getrandbits(250),
                                                         rng.getrandbits(246)]))
        count = rng.randrange(1, 12_000)
        start = rng.choice([0, rng.randrange(2**32 - count), 2**32 - count])  # last: ends at 2^32-1
        check_against_reference(backend, work, start, count)


def test_backend_caps_hits_and_counts_them_all(sim):
    backend = tuned_backend(max_hits=8)
    result = backend.search(KernelWork(bytes(range(76)), EASY), 1000, 3000)
    assert result.total == 3000 and len(result.nonces) == 8 and result.rejected == 0


def test_backend_cancel_and_stop_on_hit(sim):
    import threading
    backend = tuned_backend()
    backend.measured_rate = 1.0  # pieces of MIN_PIECE nonces
    cancel = threading.Event()
    cancel.set()
    assert backend.search(KernelWork(bytes(76), EASY), 0, 1 << 18, cancel=cancel).count == 0
    work = KernelWork(bytes(range(76)), 1 << 240)  # about one hit per 65,536 nonces
    result = backend.search(work, 0, 1 << 19, stop_on_hit=True)
    expected = reference_hits(work, 0, result.count)
    assert result.nonces and result.nonces == expected and result.count < 1 << 19
    assert result.count % (1 << 16) == 0  # whole pieces, stopped after the first with a hit


def test_two_devices_each_run_their_own_launches(monkeypatch, tmp_path):
    s = Simulator(devices=2, sms=2)
    monkeypatch.setattr(cuda, "cupy", s)
    monkeypatch.setattr(cuda, "TUNING_FILE", tmp_path / "t.json")
    from miner.backends.registry import make_backends
    backends = make_backends("cuda")
    assert [b.name for b in backends] == ["cuda:0", "cuda:1"]
    work = KernelWork(bytes(range(76)), 1 << 250)
    for b in backends:
        b.set_launch(32, 16)
        check_against_reference(b, work, 5000 * b.index, 5000)
    assert {launch.device for launch in s.launches} == {0, 1}


# ---------------------------------------------------------------- the five defects

def test_raising_max_hits_after_construction_never_overruns_the_buffer(sim):
    """Defect 1: `miner compare` raises max_hits to 4096 on a backend built with 64."""
    backend = tuned_backend()
    backend.max_hits = 4096
    result = backend.search(KernelWork(bytes(76), EASY), 0, 10_000)
    assert result.total == 10_000 and len(result.nonces) == 4096 and result.rejected == 0


def test_a_count_of_2_pow_32_is_searched_whole(sim):
    """Defect 2: 2^32 does not fit the kernel's 32-bit count; the range is split into launches
    that together cover it exactly (big grids run sampled: their first and last blocks)."""
    sim.sample_blocks = 2
    backend = tuned_backend()
    backend.set_launch(32, 1)
    result = backend.search(KernelWork(bytes(76), EASY), 0, 2**32)
    launches = [launch.scalars for launch in sim.launches]
    assert sum(a["count"] for a in launches) == 2**32 and all(a["count"] < 2**32 for a in launches)
    assert [a["nonce_start"] for a in launches] == [0, 2**31]
    for launch in sim.launches:
        threads = launch.grid[0] * launch.block[0]
        assert threads < 2**32 and threads * launch.scalars["nonces_per_thread"] >= launch.scalars["count"]
    assert result.count == 2**32 and result.rejected == 0
    assert result.total == sum(launch.blocks_run * 32 for launch in sim.launches)  # every sampled nonce


def test_one_nonce_per_thread_over_a_huge_range_never_divides_by_zero(sim):
    """Defect 3: 256 threads x 2^24 blocks made the kernel's 32-bit thread count 0."""
    sim.sample_blocks = 2
    backend = tuned_backend()
    backend.set_launch(256, 1)
    result = backend.search(KernelWork(bytes(76), EASY), 0, 2**32 - 1)
    assert result.rejected == 0 and result.total > 0
    assert all(launch.grid[0] * 256 < 2**32 for launch in sim.launches)


def test_autotune_on_a_fresh_backend_tunes_once(sim, monkeypatch):
    """Defect 4: autotune() called warm_up(), which autotuned again."""
    calls = []
    real = cuda.CudaBackend.autotune
    monkeypatch.setattr(cuda.CudaBackend, "autotune",
                        lambda self, seconds_per_shape=0.2: calls.append(1) or real(self, seconds_per_shape))
    backend = cuda.CudaBackend(0)
    assert backend.shape_source == "default"
    shapes = backend.autotune(seconds_per_shape=0.01)
    assert len(calls) == 1 and len(shapes) == 9
    grid_shapes = {(launch.block[0], launch.scalars["nonces_per_thread"]) for launch in sim.launches}
    assert {(b, n) for b in cuda.BLOCK_CHOICES for n in cuda.NONCES_PER_THREAD_CHOICES} <= grid_shapes


@pytest.mark.parametrize("content", [
    "null", "[]", "garbage{", '"text"', '{"KEY": null}', '{"KEY": []}',
    '{"KEY": {"block": 2048, "nonces_per_thread": 64}}', '{"KEY": {"block": 256, "nonces_per_thread": 0}}',
    '{"KEY": {"block": "256", "nonces_per_thread": 64}}', '{"KEY": {"block": 256.5, "nonces_per_thread": 64}}',
])
def test_a_damaged_tuning_cache_is_ignored_and_rewritten(sim, content, monkeypatch):
    """Defect 5: the cache is the user's file; anything but a valid shape is not trusted. (The
    autotune here tries one small shape: what is checked is the cache, not the tuning, which
    the test above runs over the whole grid.)"""
    monkeypatch.setattr(cuda, "BLOCK_CHOICES", (128,))
    monkeypatch.setattr(cuda, "NONCES_PER_THREAD_CHOICES", (16,))
    probe = cuda.CudaBackend(0)
    cuda.TUNING_FILE.write_text(content.replace("KEY", probe._tuning_key()))
    backend = cuda.CudaBackend(0)
    assert backend.shape_source == "default" and (backend.block, backend.nonces_per_thread) == (256, 64)
    backend.autotune(seconds_per_shape=0.01)
    entry = json.loads(cuda.TUNING_FILE.read_text())[backend._tuning_key()]
    assert (entry["block"], entry["nonces_per_thread"]) == (backend.block, backend.nonces_per_thread)
    assert cuda.CudaBackend(0).shape_source == "cache"


def test_first_use_autotunes_and_the_next_backend_starts_from_the_cache(sim, monkeypatch):
    monkeypatch.setattr(cuda.CudaBackend, "autotune",
                        lambda self, seconds_per_shape=0.2, real=cuda.CudaBackend.autotune: real(self, 0.01))
    first = cuda.CudaBackend(0)
    first.warm_up()
    assert first.shape_source == "cache" and cuda.TUNING_FILE.exists()
    second = cuda.CudaBackend(0)
    assert second.shape_source == "cache"
    assert (second.block, second.nonces_per_thread) == (first.block, first.nonces_per_thread)


# ---------------------------------------------------------------- planted faults

def mutant(monkeypatch, s, old: str, new: str):
    """miner/backends/cuda.py with one planted fault, as a separate module on the simulator."""
    path = Path(cuda.__file__)
    source = path.read_text()
    assert source.count(old) == 1, f"the fault site moved: {old!r}"
    module = types.ModuleType("miner.backends.cuda_mutant")
    module.__package__, module.__file__ = "miner.backends", str(path)
    exec(compile(source.replace(old, new), str(path), "exec"), module.__dict__)
    module.cupy = s
    module.TUNING_FILE = cuda.TUNING_FILE
    return module


def standard_checks(module):
    backend = tuned_backend(module)
    rng = random.Random(3)
    for target in (1 << 250, 1 << 246, EASY):
        check_against_reference(backend, KernelWork(rng.randbytes(76), target), rng.randrange(2**31), 4000)


def test_unmutated_backend_passes_the_standard_checks(sim):
    standard_checks(cuda)


@pytest.mark.parametrize("old,new,fails_with", [
    # a Python int where the kernel reads 32 bits
    ("(np.uint32(start), np.uint32(n),", "(np.uint32(start), n,", SimulatedFault),
    # a capacity larger than the hit buffer: the kernel writes past it
    ("np.uint32(capacity)))", "np.uint32(capacity + 64)))", SimulatedFault),
    # hits read from the wrong place (the count word taken as a nonce)
    ("out[1:1 + min(int(out[0]), capacity)]", "out[0:min(int(out[0]), capacity)]", AssertionError),
])
def test_planted_faults_are_caught(sim, monkeypatch, old, new, fails_with):
    with pytest.raises(fails_with):
        standard_checks(mutant(monkeypatch, sim, old, new))


# ---------------------------------------------------------------- the commands on simulated GPUs

def sim_miner(*args, devices=1, timeout=300, **env_extra):
    env = dict(os.environ, SIM_DEVICES=str(devices), SIM_SMS="2", **env_extra)
    return subprocess.run(program("sim_miner", *args), cwd=TESTS, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("backend,devices", [("cuda", 2), ("cuda,cpu", 1)])
def test_mine_on_simulated_gpus(tmp_path, backend, devices):
    chain = tmp_path / "chain.sqlite"
    # --wait-for-kernels: every backend mines from the start (regtest's blocks would otherwise go to
    # whichever is ready first)
    proc = sim_miner("mine", "--backend", backend, "--preset", "regtest", "--blocks", "4", "--chain",
                     str(chain), "--json", "--wait-for-kernels", devices=devices, MINER_CACHE=str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["blocks"] == 4
    names = [b["name"] for b in summary["backends"]]
    assert names == (["cuda:0", "cuda:1"] if devices == 2 else ["cuda:0", "cpu"])
    assert sum(b["rejected"] for b in summary["backends"]) == 0
    assert any(b["hashes"] > 0 for b in summary["backends"] if b["name"].startswith("cuda"))
    verify = subprocess.run([sys.executable, "-m", "miner", "chain", "verify", "--chain", str(chain), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert json.loads(verify.stdout) == {**json.loads(verify.stdout), "ok": True, "height": 4}


def test_compare_and_bench_on_a_simulated_gpu(tmp_path):
    proc = sim_miner("compare", "--backend", "ref,cuda", "--count", "20000", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["agree"] is True and [r["backend"] for r in data["rows"]] == ["ref", "cuda:0"]
    proc = sim_miner("bench", "--backend", "cuda", "--launch", "32x16,64x16", "--runs", "2", "--duration", "0.1",
                     "--switches", "2", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert [r["setting"] for r in data["results"]] == ["block=32 npt=16", "block=64 npt=16"]
    assert all(r["median"] > 0 for r in data["results"]) and len(data["job_switch"]["samples"]) == 2
