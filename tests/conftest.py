import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

# Isolation, set before anything imports numba (it reads its cache folder once, at import) and
# inherited by every process a test starts:
# - MINER_CACHE: the CPU kernel choice and the CUDA launch tuning live in a folder of this run's
#   own, so nothing a test measures (on a loaded machine, or on the simulated GPU) reaches the
#   user's runs, and nothing the user's runs chose steers a test;
# - NUMBA_CACHE_DIR: compiled kernels go under pytest's own cache folder in the checkout, not
#   beside the installed package; kept between runs (machine code keyed by CPU and source, it
#   chooses nothing), so a second run does not compile again.
_SESSION_CACHE = tempfile.mkdtemp(prefix="miner-test-cache-")
os.environ["MINER_CACHE"] = _SESSION_CACHE
os.environ["NUMBA_CACHE_DIR"] = str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "numba")

import pytest  # noqa: E402


# One builder for tests and benchmarks: real blocks, mined with hashlib, appended through Chain.
from miner.bench.chain_verify import GENESIS_TIME, build_easy_chain as mine_easy_chain  # noqa: E402,F401


@pytest.fixture
def easy_chain(tmp_path):
    chain = mine_easy_chain(tmp_path / "chain.sqlite", 12)
    yield chain
    chain.close()


class FirstRun:
    """`miner mine` started on an empty kernel cache, as observed: events with the time each
    was read (seconds from the launch), the first moment its hashes were counted, the hashes
    by backend at that moment, and the numba cache it compiled into.

    The run mines until the compiled backend has joined and found a block, then is stopped
    with SIGTERM (exit 130, an interrupted summary): how many blocks the stand-in finds while
    the compile runs is chance, so a fixed --blocks count would race the compile."""

    def __init__(self, root):
        import json
        import signal
        import subprocess
        import threading
        import time
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        def hashes(url):
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
            return {s.labels["backend"]: s.value for f in text_string_to_metric_families(text)
                    for s in f.samples if s.name == "powminer_mine_hashes_total"}

        self.numba_cache = root / "numba"
        env = {**os.environ, "NUMBA_CACHE_DIR": str(self.numba_cache), "MINER_CACHE": str(root / "cache")}
        launched = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "miner", "mine", "--chain", str(root / "c.sqlite"),
                                 "--preset", "local", "--blocks", "1000", "--backend", "cpu",
                                 "--cpu-kernel", "simd", "--json", "--metrics-port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.events = []
        self.malformed: list[str] = []
        cpu_block = threading.Event()

        def read():
            joined = False
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:  # held against the run by ended_as_asked, not a dead reader
                    self.malformed.append(line)
                    continue
                self.events.append((time.monotonic() - launched, event))
                joined = joined or (event["event"] == "backend" and event.get("status") == "joined")
                if joined and event["event"] == "block" and event.get("backend") == "cpu":
                    cpu_block.set()
            cpu_block.set()  # the run ended by itself: nothing more to wait for
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            deadline = launched + 60
            while not any(e["event"] == "start" for _, e in self.events):
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)
            url = next(e for _, e in self.events if e["event"] == "start")["chain"]["metrics"]
            while hashes(url).get("ref", 0) <= 0:
                assert time.monotonic() < deadline, "the stand-in never hashed"
                time.sleep(0.05)
            self.first_hash = time.monotonic() - launched
            self.during_compile = hashes(url)
            cpu_block.wait(900)  # the compile, then a block at 2^26 hashes: minutes at worst
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            self.returncode = proc.wait(120)
            self.stderr = proc.stderr.read()
            reader.join(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    @property
    def ended_as_asked(self) -> bool:
        """Stopped by the fixture's SIGTERM after the compiled backend's block: exit 130 and
        an interrupted summary last."""
        last = self.events[-1][1] if self.events else {}
        return (self.returncode == 130 and not self.malformed and last.get("event") == "summary"
                and last.get("interrupted") is True)


@pytest.fixture(scope="session")
def first_run(tmp_path_factory):
    """One first run per session: the first-run test reads its events, and the CPU kernel
    tests reuse the kernel it compiled (this host's SIMD build) instead of compiling it again."""
    return FirstRun(tmp_path_factory.mktemp("first-run"))


def pytest_sessionfinish(session, exitstatus):
    import shutil
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
