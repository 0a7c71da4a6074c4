"""The compile lane, a pytest plugin (registered in tests/conftest.py). A handful of tests need
minute-long numba compiles that no cache can spare a clean clone: the first run from an empty kernel cache,
this host's SHA build, the hot loop's assembly, the build for `icelake-server`, and the builds with
AVX-512 masked off. Run in the test that needs them, each held the whole suite up on one core while
the other sat idle. They are begun as soon as collection shows a selected test needs them, one after
another in a background thread (each in a child process, one core), so they overlap the rest of the
suite on the other core. The first run's build and the SHA build are copied into the shared numba
cache, so the in-process CPU tests and every `miner` the tests start load them instead of compiling
the same kernels again. A test that needs a job waits for its result."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from .first_run import FirstRun

_SHARED_NUMBA = Path(os.environ["NUMBA_CACHE_DIR"])
LANE_PROCS: list = []  # every process a lane job starts: killed if the session ends first
LANE_ROOT = Path(tempfile.mkdtemp(prefix="miner-test-lane-"))


def _seed_shared_cache(built: Path) -> None:
    """Copy numba's cache files compiled elsewhere into the shared cache (keyed by source path
    and CPU, so they are valid there), never replacing one already in it."""
    import shutil
    for src in built.rglob("*"):
        if src.is_file():
            dst = _SHARED_NUMBA / src.relative_to(built)
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


def child(code: str, env: dict | None = None, timeout: float = 1500,
          args: tuple[str, ...] = ()) -> tuple[int, str, str]:
    """Run `python -c code *args`; (exit status, stdout, stderr). Killed if it outlives `timeout`
    (or the session ends first)."""
    import subprocess
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    LANE_PROCS.append(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def _first_run_job() -> FirstRun:
    root = LANE_ROOT / "first-run"
    root.mkdir(parents=True, exist_ok=True)
    run = FirstRun(root, LANE_PROCS)
    _seed_shared_cache(run.numba_cache)
    return run


def _host_builds_job() -> tuple[int, str, str]:
    """This host's SIMD and SHA builds in the shared cache: loaded where they are (the first
    run's copy, queued before this job, or an earlier session's), compiled where not."""
    return child("from miner.kernels import cpu_select\ncpu_select.compile_kernels()")


def _scrypt_variants_job() -> tuple[int, str, str]:
    """Every CPU scrypt variant's build for this host in the shared cache: `auto` times them all
    on a first use, so a test that mines scrypt with the CPU backend would otherwise compile five
    builds inside its own time limit."""
    return child("from miner.kernels import cpu_scrypt_select\ncpu_scrypt_select.compile_variants()")


class Lane:
    """Jobs run one after another in a background thread; `result(name)` waits for one (and
    queues it first if collection did not)."""

    def __init__(self, jobs: dict):
        from concurrent.futures import ThreadPoolExecutor
        self.jobs = jobs
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="compile-lane")
        self._futures: dict = {}

    def submit(self, name: str) -> None:
        if name not in self._futures:
            self._futures[name] = self._pool.submit(self.jobs[name])

    def result(self, name: str):
        self.submit(name)
        return self._futures[name].result()

    def queued(self, name: str) -> bool:
        return name in self._futures

    def shutdown(self) -> None:
        """Nothing left running: jobs not begun are dropped, a running one's process killed."""
        for future in self._futures.values():
            future.cancel()
        for proc in LANE_PROCS:
            if proc.poll() is None:
                proc.kill()
        self._pool.shutdown(wait=True)


# name -> the job; fixtures below and in test modules ask for these by name.
LANE_JOBS: dict = {"first_run": _first_run_job, "host_builds": _host_builds_job,
                   "scrypt_variants": _scrypt_variants_job}
LANE = Lane(LANE_JOBS)
# fixture -> lane jobs it waits for (a module adds its own in `LANE_FIXTURES` at import)
LANE_FIXTURES: dict[str, list[str]] = {"first_run": ["first_run"], "host_builds": ["host_builds"],
                                        "scrypt_variants": ["scrypt_variants"]}


def _lane_jobs_of(item) -> set[str]:
    return {job for fixture in getattr(item, "fixturenames", ()) for job in LANE_FIXTURES.get(fixture, ())}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """Three groups, each in the order it was in (random or not): the tests that neither start
    processes nor build kernels (floors.py marks them) first, which need nothing from the lane; then
    those that do, which wait for this host's builds; the tests that wait for a lane job of their
    own last. The other core has the whole length of the suite before them to compile."""
    waiting = [item for item in items if _lane_jobs_of(item)]
    building = [item for item in items if item not in waiting and _needs_host_builds(item)]
    items[:] = [item for item in items if item not in waiting and item not in building] + building + waiting


def pytest_collection_finish(session):
    """Queue every lane job a selected test will wait for, in the lane's order (none when only
    collecting)."""
    if session.config.option.collectonly:
        return
    wanted = set()
    for item in session.items:
        wanted |= _lane_jobs_of(item)
    for name in LANE_JOBS:
        if name in wanted:
            LANE.submit(name)


def _needs_host_builds(item) -> bool:
    """A test that starts processes (`miner` with the CPU backend among them) or builds kernels."""
    return any(item.get_closest_marker(floor) for floor in ("process", "compile"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """When a selected test needs this host's CPU builds, every test that starts processes or
    builds kernels waits for them first (and so for the first run, queued before them), before its
    fixtures. Many tests start `miner` with the CPU backend in a process of its own; run before the
    builds were in the shared cache, each compiled the same kernels again beside the lane (a full
    run took 11 min 42 s, and one `miner compare` ran out its 120 s). The tests that do neither
    run meanwhile: they once waited too, with one core idle."""
    if LANE.queued("host_builds") and _needs_host_builds(item):
        LANE.result("host_builds")


@pytest.fixture(scope="session")
def first_run():
    """One first run per session: the first-run test reads its events, and the CPU kernel
    tests reuse the kernel it compiled (this host's SIMD build) instead of compiling it again."""
    return LANE.result("first_run")


@pytest.fixture(scope="session")
def host_builds():
    """This host's SIMD and SHA builds in the shared numba cache, made ready once per session in
    the lane (a test that builds a CpuBackend then loads them in about a second)."""
    rc, _, err = LANE.result("host_builds")
    assert rc == 0, err[-2000:]


@pytest.fixture(scope="session")
def scrypt_variants():
    """Every CPU scrypt variant compiled into the shared numba cache, once per session, in the lane."""
    rc, _, err = LANE.result("scrypt_variants")
    assert rc == 0, err[-2000:]


def pytest_sessionfinish(session, exitstatus):
    import shutil
    LANE.shutdown()
    shutil.rmtree(LANE_ROOT, ignore_errors=True)
