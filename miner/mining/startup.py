"""Mining from the first second: what is ready hashes at once, the rest joins when compiled.

A first run of `miner mine` used to compile every kernel before the first hash (81 s on a quiet
2-core machine, over 3 minutes on a busy one). Now the backends that need nothing (hashlib)
start with the coordinator, and the others start in the background and join the running
coordinator the moment they are ready (`Coordinator.add_backend`: no restart, no unit lost).
When every backend asked for needs a warm-up and none is ready after `GRACE` seconds (a kernel
in the cache loads well within that; a first-run compile takes a minute or two), a hashlib
stand-in mines meanwhile; the first backend to join retires it, and its hashes and blocks stay
in the totals. A backend that cannot start ends the run with its error, as it did before it
was started in the background.

When the CPU backend must time its two kernels to choose one (`--cpu-kernel auto`, first use on
this CPU), the stand-in is stopped first and kept stopped: a timing that shared the cores with it
would be taken on a machine our own run keeps busy, and the choice would stay provisional. The
pause lasts the few seconds of the timing; the timed backend joins right after.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from miner.backends.base import Backend
from miner.backends.ref import ReferenceBackend
from miner.backends.warmup import BackgroundStart, needs_warm_up
from miner.errors import MinerError
from miner.mining.coordinator import Coordinator

NOTICE_AFTER = 2.0  # s: a backend not ready by then is compiling, and the user is told
GRACE = 1.5  # s: how long a run with nothing ready waits for a cached kernel before the stand-in


class StagedStart:
    """The backends a run starts with (`ready`), and those that join it (`pending`)."""

    def __init__(self, backends: Sequence[Backend], notify: Callable[[dict], None]):
        self.notify = notify
        self.ready = [b for b in backends if not needs_warm_up(b)]
        self.pending = [b for b in backends if needs_warm_up(b)]
        self.stand_in: Backend | None = None
        if self.pending and not self.ready:
            names = {b.name for b in backends}
            self.stand_in = ReferenceBackend(name="ref" if "ref" not in names else "hashlib")
        self._coordinator: Coordinator | None = None
        self._background: BackgroundStart | None = None
        self._timers: list[threading.Timer] = []
        self._joined: set[str] = set()
        self._stand_in_mining = False
        self._stand_in_held = False  # a kernel timing is due or done: the stand-in stays off
        self._lock = threading.Lock()
        for backend in self.pending:
            if hasattr(backend, "before_measure"):
                backend.before_measure = self._quiet_for_timing

    @property
    def all(self) -> list[Backend]:
        return [*self.ready, *self.pending]

    def start(self, coordinator: Coordinator) -> None:
        """Begin the background starts; call after `coordinator.start()`."""
        self._coordinator = coordinator
        for delay, action, args in [(NOTICE_AFTER, self._compiling, (b,)) for b in self.pending] + \
                [(GRACE, self._start_stand_in, ())] * (self.stand_in is not None):
            timer = threading.Timer(delay, action, args=args)
            timer.daemon = True
            timer.start()
            self._timers.append(timer)
        self._background = BackgroundStart(self.pending, self._ready, self._failed).start()

    def _start_stand_in(self) -> None:
        with self._lock:
            if self._joined or self._stand_in_held or self.stand_in is None or self._coordinator is None:
                return
            self._stand_in_mining = True
            self._coordinator.add_backend(self.stand_in)

    def _quiet_for_timing(self) -> None:
        """Called by a backend about to time its kernels: the stand-in stops (its unit in flight
        finished) and does not start again."""
        with self._lock:
            self._stand_in_held = True
            mining, self._stand_in_mining = self._stand_in_mining, False
            coordinator = self._coordinator
        if mining and self.stand_in is not None and coordinator is not None:
            coordinator.retire(self.stand_in.name, wait=5.0)
            self.notify({"event": "backend", "backend": self.stand_in.name, "status": "retired",
                         "message": f"{self.stand_in.name}: stand-in stopped while the CPU kernels are "
                                    f"timed (the faster one is kept for this CPU)"})

    def _compiling(self, backend: Backend) -> None:
        with self._lock:
            if backend.name in self._joined:
                return
        helper = self.stand_in.name if self.stand_in else ", ".join(b.name for b in self.ready)
        # What the warm-up really does (a compile, a timing of the cached kernels, a slow load),
        # as the backend said before it began; the event's status keeps its old name.
        plans = self._background.plans if self._background is not None else {}
        doing = plans.get(backend.name, "preparing its kernel")
        self.notify({"event": "backend", "backend": backend.name, "status": "compiling", "doing": doing,
                     "message": f"{backend.name}: {doing}; " + (f"{helper} mines meanwhile" if helper else "waiting")})

    def _ready(self, backend: Backend, seconds: float) -> None:
        coordinator = self._coordinator
        assert coordinator is not None
        with self._lock:
            self._joined.add(backend.name)
            first = len(self._joined) == 1
            stand_in_mining = self._stand_in_mining
        coordinator.add_backend(backend)
        self.notify({"event": "backend", "backend": backend.name, "status": "joined", "seconds": seconds,
                     "device": backend.device,
                     "message": f"{backend.name}: {backend.device}, mining after {seconds:.1f} s"})
        if first and stand_in_mining and self.stand_in is not None:
            coordinator.retire(self.stand_in.name)
            self.notify({"event": "backend", "backend": self.stand_in.name, "status": "retired",
                         "message": f"{self.stand_in.name}: stand-in retired, {backend.name} took over"})

    def _failed(self, backend: Backend, error: Exception) -> None:
        message = f"backend {backend.name} could not start: {type(error).__name__}: {error}"
        self.notify({"event": "backend", "backend": backend.name, "status": "failed", "message": message})
        if self._coordinator is not None:
            self._coordinator.fail(MinerError(message))

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._background is not None:
            self._background.stop()
