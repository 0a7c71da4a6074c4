"""`miner mine` started on an empty kernel cache and watched from outside: the compile lane's first
job (support/compile_lane.py), read by tests/test_first_run.py and the CPU kernel tests."""

from __future__ import annotations

import os
import sys


class FirstRun:
    """`miner mine` started on an empty kernel cache, as observed: events with the time each
    was read (seconds from the launch), the first moment its hashes were counted, the hashes
    by backend at that moment, and the numba cache it compiled into.

    The run mines until the compiled backend has joined and found a block, then is stopped
    with SIGTERM (exit 130, an interrupted summary): how many blocks the stand-in finds while
    the compile runs is chance, so a fixed --blocks count would race the compile."""

    def __init__(self, root, started: list):
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
        started.append(proc)  # killed by the lane if the session ends first
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
            cpu_block.wait(900)  # the compile, then a block at the ramped difficulty: minutes at worst
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
