"""Backends made ready in the background, so mining starts at once.

A first run compiles the numba kernels (a minute or two on 2 cores) and a GPU's kernel (NVRTC,
seconds). Instead of waiting, the miner hashes from the first second with what is ready (the
hashlib backend, as a stand-in) and each compiled backend joins the running coordinator when it
is ready.

The CPU kernels are compiled in a child process (`python -m miner.backends.prewarm`): the
compile is Python-heavy, and in this process it would share the interpreter lock with the
stand-in and the coordinator, so both would crawl. The child fills numba's on-disk cache (and
makes the `auto` kernel choice), then the backend here loads the cached code in about a second.
A backend whose cache is already warm takes the same path and joins within a few seconds.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from miner.backends.base import Backend

log = logging.getLogger(__name__)

CHILD_TIMEOUT = 1800.0  # s: a compile that takes longer than this has hung


def needs_warm_up(backend: Backend) -> bool:
    """Whether a backend has something to compile or load before it can hash (hashlib has not,
    nor a backend already warmed up)."""
    return backend.kind != "ref" and not backend.warmed_up


class BackgroundStart:
    """Warms `backends` up, each in a thread of its own, and reports each as it is ready (or
    failed): `on_ready(backend, seconds)`, `on_failed(backend, error)`."""

    def __init__(self, backends: Sequence[Backend], on_ready: Callable[[Backend, float], None],
                 on_failed: Callable[[Backend, Exception], None]):
        self.backends = list(backends)
        self.on_ready = on_ready
        self.on_failed = on_failed
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._children: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self.plans: dict[str, str] = {}  # backend name -> what its warm-up does, in words

    def start(self) -> BackgroundStart:
        for backend in self.backends:
            t = threading.Thread(target=self._run, args=(backend,), name=f"warm-{backend.name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self, backend: Backend) -> None:
        t0 = time.perf_counter()
        try:
            self.plans[backend.name] = backend.warm_up_words()  # before the warm-up changes the answer
            if backend.kind == "cpu" and not backend.loads_from_cache():
                failure = self._prewarm_cpu(backend)
                if self._stop.is_set():
                    return
                if failure:
                    log.info("%s: the compile in a child process failed (%s); compiling here", backend.name, failure)
            backend.warm_up()
        except Exception as exc:  # noqa: BLE001  (a compiler or driver error of any type: reported, not raised)
            if not self._stop.is_set():
                self.on_failed(backend, exc)
            return
        if not self._stop.is_set():
            self.on_ready(backend, time.perf_counter() - t0)

    def _prewarm_cpu(self, backend: Backend) -> str | None:
        """Compile the CPU backend's kernel in a child process; its last line when it failed,
        else None (the warm-up in this process then loads the cached code, or raises the real
        error)."""
        scrypt = "scrypt" in backend.algorithms
        cmd = [sys.executable, "-m", "miner.backends.prewarm", "--threads", str(backend.threads),
               *(["--pow", "scrypt"] if scrypt else ["--kernel", backend.kernel_preference])]
        with self._lock:
            if self._stop.is_set():
                return "stopped"
            try:
                child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            except OSError as exc:
                return str(exc)
            self._children.append(child)
        try:
            _, err = child.communicate(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            return f"no result in {CHILD_TIMEOUT:.0f} s"
        if child.returncode != 0:
            lines = err.strip().splitlines()
            return lines[-1] if lines else f"exit {child.returncode}"
        return None

    def stop(self) -> None:
        """No more reports, and no compile left running: the run is over (numba writes its cache
        files whole, so a compile cut short leaves nothing half-written)."""
        with self._lock:
            self._stop.set()
            children = list(self._children)
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
