import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

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
    by backend at that moment, and the numba cache it compiled into."""

    def __init__(self, root):
        import json
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
                                 "--preset", "local", "--blocks", "2", "--backend", "cpu", "--cpu-kernel", "simd",
                                 "--json", "--metrics-port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.events = []

        def read():
            for line in proc.stdout:
                self.events.append((time.monotonic() - launched, json.loads(line)))
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
            self.returncode = proc.wait(900)
            self.stderr = proc.stderr.read()
            reader.join(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def first_run(tmp_path_factory):
    """One first run per session: the first-run test reads its events, and the CPU kernel
    tests reuse the kernel it compiled (this host's SIMD build) instead of compiling it again."""
    return FirstRun(tmp_path_factory.mktemp("first-run"))
