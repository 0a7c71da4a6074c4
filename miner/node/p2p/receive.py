"""Messages on their way in: the memory that peers' incomplete messages hold, bounded across
all peers, and the pace a started message must keep.

A message's header announces its length (up to 4 MB) and the payload follows. A peer that
sends most of a large payload and stops would hold that much of our memory until it is dropped
for silence (100 such peers held 426 MiB for 20 minutes). So a started message must go on
arriving at `min_rate` bytes a second, after `grace` seconds, or its peer is dropped; and all
incomplete messages together may hold `max_bytes`: past it, the slowest (by average rate since
it started; the largest among equals) are dropped until they fit, which an honest peer sending
a block at the speed of its link is not. Core has neither (it reads into a per-peer buffer of
up to 5 MB); both are ours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

CHUNK = 64 << 10  # bytes read at a time
MAX_PARTIAL_BYTES = 32 << 20  # all peers' incomplete messages together: 8 of the largest
MIN_RATE = 64 << 10  # bytes a second a started message must keep up (512 kbit/s)
GRACE = 5.0  # s before the pace is required


@dataclass(frozen=True)
class ReceiveLimits:
    max_bytes: int = MAX_PARTIAL_BYTES
    min_rate: float = MIN_RATE
    grace: float = GRACE


@dataclass(eq=False)
class Partial:
    """One incomplete message: who sends it, how long it is, how much of it is here."""

    close: object  # the peer's close(), called when it is dropped to make room
    length: int
    started: float
    got: int = 0

    def rate(self, now: float) -> float:
        return self.got / max(now - self.started, 1e-3)


@dataclass
class ReceiveBudget:
    limits: ReceiveLimits = field(default_factory=ReceiveLimits)
    total: int = 0
    peak: int = 0
    slow: int = 0  # peers dropped for a message that fell behind the pace
    evicted: int = 0  # peers dropped to bring the total under max_bytes
    _partials: set[Partial] = field(default_factory=set)

    def start(self, close, length: int) -> Partial:
        partial = Partial(close, length, time.monotonic())
        self._partials.add(partial)
        return partial

    def deadline(self, partial: Partial) -> float:
        """When the next byte is due: by then it must be `got` bytes past the pace line."""
        limits = self.limits
        return partial.started + limits.grace + partial.got / limits.min_rate

    def grow(self, partial: Partial, count: int) -> bool:
        """`count` more bytes of `partial` are here; False when that put the total over the
        budget and `partial` itself was among the slowest dropped to fit (the others are
        closed here), or had been dropped before."""
        if partial not in self._partials:
            return False
        partial.got += count
        self.total += count
        self.peak = max(self.peak, self.total)
        if self.total <= self.limits.max_bytes:
            return True
        now = time.monotonic()
        survived = True
        for victim in sorted(self._partials, key=lambda p: (p.rate(now), -p.got)):
            if self.total <= self.limits.max_bytes:
                break
            self.finish(victim)
            self.evicted += 1
            if victim is partial:
                survived = False
            else:
                victim.close()  # type: ignore[operator]
        return survived

    def finish(self, partial: Partial) -> None:
        """The message is complete (or its peer gone): its bytes leave the budget."""
        if partial in self._partials:
            self._partials.discard(partial)
            self.total -= partial.got
