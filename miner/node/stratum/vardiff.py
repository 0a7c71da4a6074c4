"""Variable share difficulty per connection, as pools that run at scale set it.

A share costs the server a hash check and the miner a round trip, and tells the pool how much
the miner hashes; too many swamp the server, too few make the estimate noisy and the payout
lumpy. Like ckpool: aim at about 18 shares a minute, measure the miner's rate as a decaying
average of difficulty per second, and decide again after 72 shares or 240 seconds, whichever
comes first (both settable: a test or a small private pool decides sooner); move only when
the rate is well off (below half or above one and a third of the aim), clamped to the
configured bounds and never above the network's difficulty (a share harder than a block would
hide blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHARES_PER_MINUTE = 18.0
CHECK_SHARES = 72
CHECK_SECONDS = 240.0
WINDOW = 60.0  # s: the decaying average's time constant


@dataclass(frozen=True)
class VarDiffLimits:
    minimum: float = 1e-9
    maximum: float = 1e12
    shares_per_minute: float = SHARES_PER_MINUTE
    retarget_shares: int = CHECK_SHARES  # decide again after this many shares ...
    retarget_seconds: float = CHECK_SECONDS  # ... or this many seconds, whichever comes first


class VarDiff:
    def __init__(self, limits: VarDiffLimits, now: float):
        self.limits = limits
        self._weighted = 0.0  # decayed sum of share difficulties
        self._seconds = 0.0  # decayed time they took
        self._last = now
        self._since_change = now
        self._shares_since_change = 0

    def rate(self) -> float:
        """Difficulty per second: a difficulty-1 share every second is 2^32 hashes a second."""
        return self._weighted / self._seconds if self._seconds > 0 else 0.0

    def record(self, share_difficulty: float, current: float, network: float, now: float) -> float | None:
        """Count an accepted share; the new difficulty when it should change, else None."""
        elapsed = max(0.0, now - self._last)
        decay = math.exp(-elapsed / WINDOW)
        self._weighted = self._weighted * decay + share_difficulty
        self._seconds = self._seconds * decay + elapsed
        self._last = now
        self._shares_since_change += 1
        limits = self.limits
        if self._shares_since_change < limits.retarget_shares and now - self._since_change < limits.retarget_seconds:
            return None
        return self._decide(current, network, now)

    def _decide(self, current: float, network: float, now: float) -> float | None:
        rate = self.rate()
        if rate <= 0:
            return None
        optimal = rate * 60.0 / self.limits.shares_per_minute
        if current * 0.5 <= optimal <= current * 4 / 3:
            self._since_change, self._shares_since_change = now, 0
            return None
        new = self.clamp(optimal, network)
        self._since_change, self._shares_since_change = now, 0
        return new if new != current else None

    def clamp(self, difficulty: float, network: float) -> float:
        return min(max(difficulty, self.limits.minimum), self.limits.maximum, network)
