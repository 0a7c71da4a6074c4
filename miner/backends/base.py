"""The contract every backend keeps, and the host re-check that guards it.

A backend's kernel only proposes candidates. `Backend.search` validates the request, runs the
kernel, and re-checks each candidate with hashlib; a candidate that fails is counted in
`rejected` (a sign of a broken kernel or device) and never returned.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from ..work import KernelWork, check_range

DEFAULT_MAX_HITS = 64


@dataclass
class SearchResult:
    nonces: list[int]  # verified hits, at most max_hits of them
    total: int  # every hit the kernel counted in the range, returned or not
    count: int  # nonces searched
    rejected: int = 0  # candidates that failed the host re-check
    seconds: float = 0.0


@dataclass
class BackendInfo:
    name: str  # e.g. "cpu", "cuda:0", "ref"
    kind: str  # "cpu", "cuda" or "ref"
    device: str  # human-readable device name
    details: dict = field(default_factory=dict)


class Backend(abc.ABC):
    """Searches nonce ranges of a `KernelWork` for hashes at or below its target."""

    kind: str = "?"

    def __init__(self, name: str, device: str, max_hits: int = DEFAULT_MAX_HITS):
        self.name = name
        self.device = device
        self.max_hits = max_hits
        self.measured_rate = 0.0  # hashes per second, updated by whoever times the searches

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(self.name, self.kind, self.device)

    @property
    def initial_batch(self) -> int:
        """Nonces in a first unit, before any rate has been measured."""
        return 1 << 16

    def search(self, work: KernelWork, nonce_start: int, count: int) -> SearchResult:
        check_range(nonce_start, count)
        candidates, total = self._search(work, nonce_start, count)
        verified = sorted(n for n in candidates if work.check(n))
        return SearchResult(verified, total, count, rejected=len(candidates) - len(verified))

    @abc.abstractmethod
    def _search(self, work: KernelWork, nonce_start: int, count: int) -> tuple[list[int], int]:
        """Run the kernel: (up to max_hits candidate nonces, total hit count)."""

    def warm_up(self) -> None:
        """Compile or load whatever the first real search would otherwise wait for."""

    def close(self) -> None:
        """Release device resources."""
