"""The numba CPU kernels (SIMD and SHA extensions): bit-exact against hashlib, at full vector
width, portable to CPUs without AVX-512 or SHA, and chosen by measurement."""

import json
import os
import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from miner.kernels import cpu as kernel
from miner.kernels import cpu_select
from miner.kernels.gen_cpu_kernel import OUT, generate
from support import compile_lane
from support.vectors import REAL_HEADERS

from miner.backends.cpu import CpuBackend
from miner.backends.ref import reference_hits
from miner.backends.work import KernelWork
from miner.errors import InvalidInput
from miner.primitives.header import BlockHeader, target_words


def _skip_unless_available(name):
    why = cpu_select.unavailable_reason(name)
    if why:
        pytest.skip(f"CPU kernel {name!r} not tested here: {why}")


@pytest.fixture(scope="module", params=["simd", "sha"])
def backend(request, host_builds):
    """The CPU backend with each kernel in turn; every test that takes it runs for both."""
    _skip_unless_available(request.param)
    b = CpuBackend(threads=2, kernel=request.param)
    b.warm_up()
    assert b.kernel == request.param
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


@pytest.mark.parametrize("name", ["simd", "sha"])
def test_full_256_bit_comparison_decides(name, host_builds):
    """A target equal to one hash in its top 224 bits: only the low limbs separate hit from miss."""
    _skip_unless_available(name)
    search = cpu_select.search_function(name)
    rng = random.Random(42)
    work0 = KernelWork(rng.randbytes(76), 1)
    h = work0.hash_int(1234)
    exact = KernelWork(work0.header_prefix, h)        # hash == target: a hit (<=)
    below = KernelWork(work0.header_prefix, h - 1)    # one less: a miss, same top limbs
    job = kernel.job_array(exact.midstate, exact.tail)
    out = np.zeros(4099, dtype=np.int64)
    for n in (1, 2, 4099):  # the odd nonce on the exact path, a pair, and the counting loop
        hit = search(job, kernel.target_array(exact.target_words), 1234, n, out)
        assert list(out[:hit]) == reference_hits(exact, 1234, n) and out[0] == 1234
        miss = search(job, kernel.target_array(below.target_words), 1234, n, out)
        assert list(out[:miss]) == reference_hits(below, 1234, n) and miss == hit - 1
    assert target_words(h)[7] == target_words(h - 1)[7]


def test_hits_are_capped_but_counted(backend):
    work = KernelWork(bytes(76), (1 << 256) - 1)
    result = backend.search(work, 1000, 50_000)
    assert result.total == 50_000 and len(result.nonces) == 64 and result.nonces[0] == 1000


@pytest.mark.parametrize("start,count", [(0, 0), (5, -1), (2**32 - 1, 2), (-1, 10)])
def test_bad_ranges_rejected(backend, start, count):
    with pytest.raises(InvalidInput):
        backend.search(KernelWork(bytes(76), 1 << 255), start, count)


def test_bad_work_rejected():
    with pytest.raises(InvalidInput, match="76 bytes"):
        KernelWork(bytes(75), 1 << 255)
    with pytest.raises(InvalidInput, match="target"):
        KernelWork(bytes(76), 0)


_COMPILE_ONLY = textwrap.dedent("""
    import re, sys
    from numba import njit, types
    from miner.kernels import cpu_sha256d
    fn = njit(nogil=True, boundscheck=False)(cpu_sha256d.count_candidates.py_func)
    fn.compile((types.Array(types.uint32, 1, "C"), types.uint32, types.int64, types.uint32))
    asm = next(iter(fn.inspect_asm().values()))
    print(*(len(re.findall(p, asm)) for p in (r"vprold\\s+[^\\n]*zmm", r"vprold\\s+[^\\n]*ymm",
                                              r"vpternlogd\\s+[^\\n]*zmm", r"\\b(?:vpaddd|paddd)\\b")))
""")


def _hot_loop_counts(env: dict) -> tuple[int, int, int, int]:
    """The hot loop compiled afresh (no cache) in a child process for `env`'s CPU, never run:
    its zmm and ymm rotates, zmm three-input logic ops and 32-bit vector adds."""
    rc, out, err = compile_lane.child(_COMPILE_ONLY, env)
    assert rc == 0, err[-2000:]
    zmm, ymm, ternlog, adds = map(int, out.split())
    return zmm, ymm, ternlog, adds


# Both minute-long compiles run in the suite's compile lane (compile_lane.py), beside other tests.
compile_lane.LANE_JOBS["hotloop"] = lambda: _hot_loop_counts({
    "NUMBA_CACHE_DIR": str(compile_lane.LANE_ROOT / "hotloop")})
compile_lane.LANE_JOBS["icelake"] = lambda: _hot_loop_counts({
    "NUMBA_CPU_NAME": "icelake-server", "NUMBA_CPU_FEATURES": "",
    "NUMBA_CACHE_DIR": str(compile_lane.LANE_ROOT / "icelake")})
compile_lane.LANE_FIXTURES["hotloop_build"] = ["hotloop"]
compile_lane.LANE_FIXTURES["icelake_build"] = ["icelake"]


@pytest.fixture
def hotloop_build():
    return compile_lane.LANE.result("hotloop")


@pytest.fixture
def icelake_build():
    return compile_lane.LANE.result("icelake")


def test_hot_loop_is_vectorized(hotloop_build):
    """Recompile the hot loop without the cache and read its assembly: it must stay SIMD, 16
    lanes wherever the CPU numba compiles for has AVX-512F."""
    zmm, _, ternlog, adds = hotloop_build
    if "avx512f" in cpu_select.enabled_features():
        assert cpu_select.simd_lanes() == 16
        assert zmm > 1000, "rotates are not 16-lane zmm rotates"
        assert ternlog > 500, "3-input logic not fused"
    else:
        assert adds > 500, "hot loop is not vectorized"


def test_sixteen_lanes_even_where_the_tuning_prefers_256_bits(icelake_build):
    """Intel's AVX-512 cores carry LLVM's `prefer-256-bit` tuning, under which the loop
    vectorizer picks 8 lanes; the kernel must still get 16. Compiled (never run) for
    `icelake-server`, whose default features include AVX-512F and that tuning flag, so this
    holds on any x86 host. numba's own functions keep their width: only the kernel is marked."""
    zmm, ymm, _, _ = icelake_build
    assert zmm > 1000 and ymm == 0, (zmm, ymm)


def test_width_attribute_stays_on_the_function_that_asks():
    """`full_width()` marks the jitted function it is called in and no other: a user's own numba
    code in the same process keeps the host's defaults."""
    from miner.kernels.cpu_width import full_width
    from numba import njit

    @njit
    def plain(a):
        s = 0
        for x in a:
            s += x
        return s

    @njit
    def marked(a):
        full_width()
        return plain(a)

    assert marked(np.arange(10)) == plain(np.arange(10)) == 45
    marked_ir = next(iter(marked.inspect_llvm().values()))
    plain_ir = next(iter(plain.inspect_llvm().values()))
    assert '"prefer-vector-width"="512"' in marked_ir and "noinline" in marked_ir
    assert '"prefer-vector-width"' not in plain_ir


_MASKED_RUN = textwrap.dedent("""
    import json, re, sys
    import numpy as np
    from miner.kernels import cpu, cpu_select
    from miner.backends.cpu import CpuBackend
    from miner.backends.ref import reference_hits
    from miner.backends.work import KernelWork
    report = {"available": cpu_select.available(), "lanes": cpu_select.simd_lanes()}
    for name in [k for k in sys.argv[1].split(",") if k]:
        b = CpuBackend(threads=2, kernel=name)
        b.warm_up()
        for start, count, target in ((0, 9001, 1 << 250), (2**32 - 5000, 5000, 1 << 252)):
            w = KernelWork(bytes(range(76)), target)
            r = b.search(w, start, count)
            ref = reference_hits(w, start, count)
            assert r.total == len(ref) and r.nonces == ref[:64], (name, r, ref)
        b.close()
    if "simd" in sys.argv[1]:
        report["search_cache_hits"] = sum(cpu.search.stats.cache_hits.values())
        report["search_cache_misses"] = sum(cpu.search.stats.cache_misses.values())
    if len(sys.argv) > 2:
        report["auto"] = cpu_select.choose("auto")
    print(json.dumps(report))
""")


def _masked_run(kernels, features, tmp_path, *extra, numba_cache=None) -> dict:
    """`_MASKED_RUN`'s report, from a process that compiles for `features`, with its own numba
    cache (or the one given)."""
    env = {"NUMBA_CPU_FEATURES": features, "MINER_CACHE": str(tmp_path / "choice"),
           "NUMBA_CACHE_DIR": str(numba_cache or tmp_path / "numba")}
    rc, out, err = compile_lane.child(_MASKED_RUN, env, timeout=1200, args=(kernels, *extra))
    assert rc == 0, err[-3000:]
    return json.loads(out.splitlines()[-1])


def _masked_builds() -> tuple[dict, dict | None]:
    """The lane's job: with AVX-512 masked off, the SIMD kernel compiled into the first run's
    cache (which holds this host's 16-lane build: it must not be loaded) and the SHA kernel in
    a cache of its own, one after the other; each child checks its kernel against hashlib."""
    run = compile_lane.LANE.result("first_run")  # queued before this job: already done
    masked = cpu_select.without_avx512(cpu_select.target_cpu()[1])
    root = compile_lane.LANE_ROOT / "masked"
    simd = _masked_run("simd", masked, root / "simd", numba_cache=run.numba_cache)
    sha = _masked_run("sha", masked, root / "sha") if cpu_select.unavailable_reason("sha") is None else None
    return simd, sha


compile_lane.LANE_JOBS["masked"] = _masked_builds
compile_lane.LANE_FIXTURES["masked_builds"] = ["first_run", "masked"]


@pytest.fixture
def masked_builds():
    if not cpu_select.target_cpu()[1]:
        pytest.skip("numba reports no CPU features here")
    compile_lane.LANE.result("first_run")  # the masked job reads its cache: queued first
    return compile_lane.LANE.result("masked")


def test_a_build_for_other_features_never_loads_and_both_kernels_are_exact_without_avx512(
        tmp_path, first_run, masked_builds):
    """numba's cache is keyed by the features compiled for. The first run's cache holds this
    host's SIMD build (compiled there from nothing): with the host's features it loads; with
    AVX-512 masked off it must not (16-lane code would fault on such a CPU), and the SIMD (8 or
    4 lanes) and SHA kernels compiled there are bit-exact: the desktop case. The masked builds
    are compiled in the suite's compile lane (compile_lane.py)."""
    host = cpu_select.target_cpu()[1]
    cache = first_run.numba_cache
    assert first_run.ended_as_asked, (first_run.returncode, first_run.malformed, first_run.stderr)
    assert _masked_run("simd", host, tmp_path, numba_cache=cache)["search_cache_hits"] == 1
    simd, sha = masked_builds
    assert simd["search_cache_hits"] == 0 and simd["search_cache_misses"] == 1
    assert simd["lanes"] == (8 if "avx2" in cpu_select.enabled_features() else 4)
    if sha is not None:
        assert sha["available"] == ["simd", "sha"]  # and its kernel was exact


def test_without_sha_auto_takes_the_simd_kernel_and_never_compiles_the_sha_one(tmp_path):
    """SHA masked off too: `auto` takes the one kernel left, without compiling (or measuring)
    anything; compiling the SHA kernel would abort the process on such a CPU."""
    host = cpu_select.target_cpu()[1]
    if not host:
        pytest.skip("numba reports no CPU features here")
    report = _masked_run("", cpu_select.without_avx512(host) + ",-sha", tmp_path, "auto")
    assert report["available"] == ["simd"]
    assert report["lanes"] == (8 if "avx2" in cpu_select.enabled_features() else 4)
    assert report["auto"] == ["simd", "the only kernel this CPU runs"]
    assert not list((tmp_path / "numba").rglob("*.nbi"))  # nothing was compiled


def test_auto_measures_once_then_reads_the_choice(tmp_path, monkeypatch, host_builds):
    """`auto` times the kernels on first use and keeps the answer per CPU; a damaged or foreign
    entry is measured again, never trusted."""
    if len(cpu_select.available()) < 2:
        pytest.skip("only one CPU kernel runs here: auto has nothing to measure")
    monkeypatch.setenv("MINER_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_select.OtherWork, "share", lambda self: 0.0)  # no other program ran
    kernel_name, why = cpu_select.choose("auto")
    assert kernel_name in ("simd", "sha") and why.startswith("measured now")
    data = json.loads((tmp_path / cpu_select.CHOICE_FILE_NAME).read_text())
    entry = data[cpu_select.choice_key()]
    assert entry["kernel"] == kernel_name
    assert entry["rates"][kernel_name] == max(entry["rates"].values()) and min(entry["rates"].values()) > 0
    assert cpu_select.choose("auto") == (kernel_name, "measured earlier on this CPU")
    other = "sha" if kernel_name == "simd" else "simd"
    data[cpu_select.choice_key()]["kernel"] = other  # a choice stored earlier is taken as it is
    (tmp_path / cpu_select.CHOICE_FILE_NAME).write_text(json.dumps(data))
    assert cpu_select.choose("auto") == (other, "measured earlier on this CPU")
    data[cpu_select.choice_key()]["kernel"] = "avx9000"
    (tmp_path / cpu_select.CHOICE_FILE_NAME).write_text(json.dumps(data))
    assert cpu_select.choose("auto")[1].startswith("measured now")
    (tmp_path / cpu_select.CHOICE_FILE_NAME).write_text("{not json")
    assert cpu_select.choose("auto")[1].startswith("measured now")
    assert cpu_select.choose("simd") == ("simd", "chosen")
    assert cpu_select.choose("auto", remeasure=True)[1].startswith("measured now")  # bench --cpu-kernel auto

    # Measured while other programs took the CPU: provisional, measured again on the next uses,
    # kept after three. (The bookkeeping is what is checked here: the timing is stood in for.)
    monkeypatch.setattr(cpu_select.OtherWork, "share", lambda self: 0.6)
    monkeypatch.setattr(cpu_select, "measure", lambda kernels: {k: 1e6 * (i + 1) for i, k in enumerate(kernels)})
    (tmp_path / cpu_select.CHOICE_FILE_NAME).write_text("{}")
    whys = [cpu_select.choose("auto")[1] for _ in range(4)]
    assert all(w.startswith("measured now") for w in whys[:3]), whys
    assert "measured again next time" in whys[0] and "took 60% of the CPU" in whys[0]
    assert "measured again next time" not in whys[2]
    assert whys[3] == "measured earlier on this CPU"
    entry = json.loads((tmp_path / cpu_select.CHOICE_FILE_NAME).read_text())[cpu_select.choice_key()]
    assert entry["provisional"] and entry["attempts"] == 3 and entry["others_busy"] == 0.6


def test_the_choice_is_provisional_by_other_programs_use_of_the_cpu_not_our_own(tmp_path, monkeypatch):
    """Only a timing shared with other programs is provisional: a quiet one is kept at once,
    whatever the load average (our own compile and threads raise it); where /proc/stat cannot
    be read, the load average decides. The stand-in's hook runs just before a timing, and only
    when one is due."""
    if len(cpu_select.available()) < 2:
        pytest.skip("only one CPU kernel runs here: auto has nothing to measure")
    monkeypatch.setenv("MINER_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_select, "measure", lambda kernels: {k: 1e6 * (i + 1) for i, k in enumerate(kernels)})
    monkeypatch.setattr(cpu_select, "load_per_core", lambda: 2.5)  # our own compile did that
    real_share = cpu_select.OtherWork.share
    monkeypatch.setattr(cpu_select.OtherWork, "share", lambda self: 0.05)
    calls: list[str] = []
    assert cpu_select.choose("auto", before_measure=lambda: calls.append("hook"))[1].startswith("measured now")
    assert calls == ["hook"]
    assert cpu_select.choose("auto", before_measure=lambda: calls.append("hook")) == \
        (cpu_select.choose("auto")[0], "measured earlier on this CPU")
    assert calls == ["hook"]  # nothing timed, nothing stopped
    entry = json.loads((tmp_path / cpu_select.CHOICE_FILE_NAME).read_text())[cpu_select.choice_key()]
    assert entry["provisional"] is False and entry["others_busy"] == 0.05

    monkeypatch.setattr(cpu_select.OtherWork, "share", real_share)
    monkeypatch.setattr(cpu_select, "_cpu_snapshot", lambda: None)  # not Linux
    assert "load 2.5 a core" in cpu_select.choose("auto", remeasure=True)[1]
    entry = json.loads((tmp_path / cpu_select.CHOICE_FILE_NAME).read_text())[cpu_select.choice_key()]
    assert entry["provisional"] is True and entry["load_per_core"] == 2.5


def test_others_share_counts_what_the_kernel_saw_busy_less_our_own_time():
    # 2 s on 4 cores = 8 core-seconds; 5 busy, 3 of them ours: others took 2 of 8.
    assert cpu_select.others_share((10.0, 100.0, 20.0), (12.0, 105.0, 23.0), 4) == 0.25
    assert cpu_select.others_share((10.0, 100.0, 20.0), (12.0, 103.0, 23.0), 4) == 0.0  # ours only
    assert cpu_select.others_share((10.0, 100.0, 20.0), (12.0, 102.9, 23.0), 4) == 0.0  # tick rounding


def test_other_programs_spinning_are_seen_as_other_work():
    """Real programs on every core while we wait: /proc/stat counts them, not us."""
    if cpu_select._cpu_snapshot() is None:
        pytest.skip("no /proc/stat here: the load average stands in")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)  # they are running
        meter = cpu_select.OtherWork()
        time.sleep(1.0)
        share = meter.share()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert share is not None and share >= cpu_select.OTHERS_BUSY, share


def test_unknown_or_missing_kernel_is_a_usage_error():
    with pytest.raises(InvalidInput, match="unknown CPU kernel"):
        CpuBackend(threads=1, kernel="avx9000")
    if cpu_select.unavailable_reason("sha"):
        with pytest.raises(InvalidInput, match="SHA extensions"):
            CpuBackend(threads=1, kernel="sha")


def test_without_avx512_drops_every_wide_feature():
    features = "+avx2,+avx512f,+avx512vl,+amx-tile,+avx10.1,+sha,-avx512fp16"
    masked = cpu_select.without_avx512(features)
    assert cpu_select.enabled_features(masked) == {"avx2", "sha"}
    assert cpu_select.enabled_features(masked + ",-sha") == {"avx2"}  # the last entry wins
    assert cpu_select.simd_lanes(cpu_select.enabled_features(masked)) == 8
    assert cpu_select.simd_lanes(cpu_select.enabled_features(features)) == 16
