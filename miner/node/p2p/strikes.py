"""Repeat offenders: addresses whose peers announced blocks and then did not deliver them.

A peer that stalls a download (or answers `notfound` for a block it announced) is dropped
without a ban the first time: a slow link or a restart looks the same. An address whose peers
do it `REPEAT` times within `WINDOW` is a repeat offender, and the manager bans it: a stranger
that feeds free headers and never the blocks cannot come back and top them up for ever. The
record is bounded (the oldest addresses are forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict

REPEAT = 2
WINDOW = 3600.0  # s
MAX_ADDRESSES = 4096


class Strikes:
    def __init__(self, repeat: int = REPEAT, window: float = WINDOW, max_addresses: int = MAX_ADDRESSES):
        self.repeat, self.window, self.max_addresses = repeat, window, max_addresses
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def add(self, host: str, now: float) -> bool:
        """Count a strike against `host`; whether it is now a repeat offender."""
        times = [t for t in self._seen.pop(host, []) if now - t < self.window] + [now]
        self._seen[host] = times[-self.repeat:]
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)
        return len(times) >= self.repeat
