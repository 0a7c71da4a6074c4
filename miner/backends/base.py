"""The contract every backend keeps, and the host re-check that guards it.

A backend's kernel only proposes candidates. `Backend.search` validates the request, runs the
kernel, and re-checks each candidate with hashlib; a candidate that fails is counted in
`rejected` (a sign of a broken kernel or device) and never returned.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass

from miner.backends.work import KernelWork, check_range
from miner.errors import InvalidInput

# The most CPU threads one backend is given: past any machine's cores, a guard against typos
# (every command's --threads says the same bound).
MAX_THREADS = 1024

DEFAULT_MAX_HITS = 64
# With a cancel event, a search runs in pieces of about this many seconds of work and checks the
# event between them: a new job then reaches a busy backend within a piece, not a whole unit.
# 20 ms pieces cost the 2-thread CPU backend 3-5% (a join of its threads per piece); at 50 ms the
# cost was lost in the noise of this machine.
CANCEL_CHECK_SECONDS = 0.05
MIN_PIECE = 1 << 16


@dataclass
class SearchResult:
    nonces: list[int]  # verified hits, at most max_hits of them
    total: int  # every hit the kernel counted in the range, returned or not
    count: int  # nonces searched: [nonce_start, nonce_start + count), less than asked if cancelled
    rejected: int = 0  # candidates that failed the host re-check
    seconds: float = 0.0


class Backend(abc.ABC):
    """Searches nonce ranges of a `KernelWork` for hashes at or below its target."""

    kind: str = "?"
    # The proofs of work this backend's kernel computes (KernelWork.pow).
    algorithms: frozenset[str] = frozenset({"sha256d"})

    def __init__(self, name: str, device: str, max_hits: int = DEFAULT_MAX_HITS):
        self.name = name
        self.device = device
        self.max_hits = max_hits
        self.measured_rate = 0.0  # hashes per second, updated by whoever times the searches

    @property
    def initial_batch(self) -> int:
        """Nonces in a first unit, before any rate has been measured."""
        return 1 << 16

    def search(self, work: KernelWork, nonce_start: int, count: int,
               cancel: threading.Event | None = None, stop_on_hit: bool = False) -> SearchResult:
        """Search [nonce_start, nonce_start + count) and re-check every candidate on the host.

        With `cancel` the range is searched in order, in pieces of about `CANCEL_CHECK_SECONDS`
        at the measured rate, and the search stops before the next piece once the event is set;
        with `stop_on_hit` it also stops after the first piece that holds a verified hit (a miner
        needs one solution, not the rest of the unit). The result's `count` says how far it got.
        """
        check_range(nonce_start, count)
        if work.pow not in self.algorithms:
            raise InvalidInput(f"the {self.name} backend has no {work.pow} kernel "
                               f"(it computes {', '.join(sorted(self.algorithms))})")
        piece = self._piece(count) if cancel is not None or stop_on_hit else count
        verified: list[int] = []
        total = done = rejected = 0
        while done < count:
            if cancel is not None and cancel.is_set():
                break
            n = min(piece, count - done)
            candidates, hits = self._search(work, nonce_start + done, n)
            good = [c for c in candidates if work.check(c)]
            rejected += len(candidates) - len(good)
            verified += good
            total += hits
            done += n
            if stop_on_hit and good:
                break
        return SearchResult(sorted(verified)[:self.max_hits], total, done, rejected=rejected)

    def _piece(self, count: int) -> int:
        """Nonces per cancellation check: all of them until a rate has been measured."""
        if self.measured_rate <= 0:
            return count
        return max(MIN_PIECE, int(self.measured_rate * CANCEL_CHECK_SECONDS))

    @abc.abstractmethod
    def _search(self, work: KernelWork, nonce_start: int, count: int) -> tuple[list[int], int]:
        """Run the kernel: (up to max_hits candidate nonces, total hit count)."""

    def warm_up(self) -> None:  # noqa: B027 (an optional hook: most backends have nothing to warm)
        """Compile or load whatever the first real search would otherwise wait for."""

    def warm_up_words(self) -> str:
        """What `warm_up` is about to do, in the user's words, for the line a run prints when a
        backend is not ready after a moment: asked before the warm-up starts, since the warm-up
        changes the answer (a compile fills the cache it would then load from)."""
        return "preparing its kernel"

    @property
    def warmed_up(self) -> bool:
        """Whether `warm_up` has run to the end (backends that compile record how long it took)."""
        return getattr(self, "compile_seconds", None) is not None

    def close(self) -> None:  # noqa: B027 (an optional hook: most backends hold nothing)
        """Release device resources."""
