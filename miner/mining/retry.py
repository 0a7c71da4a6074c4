"""How long a miner keeps asking a node or pool that does not answer.

Nodes restart and pools drop connections; a miner that gives up at the first refused connection
stops hashing for good over a few seconds' outage. cpuminer's answer is the one kept here: retry
with a pause that doubles up to a ceiling, forever by default (`--retries -1`), or give up after
`--retries N` failed tries in a row with the last reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

FIRST_WAIT = 0.5  # s before the first retry
LONGEST_WAIT = 30.0  # s: the pause stops doubling here
FOREVER = -1


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = FOREVER  # failed tries in a row after the first before giving up
    first: float = FIRST_WAIT
    longest: float = LONGEST_WAIT

    def waits(self) -> Iterator[float]:
        """The pause before each retry, doubling to `longest`; it ends when the retries are spent."""
        wait, done = self.first, 0
        while self.retries < 0 or done < self.retries:
            yield wait
            done += 1
            wait = min(2 * wait, self.longest)

    def gives_up_after(self, failures: int) -> bool:
        """Whether `failures` failed tries in a row exhaust the retries."""
        return self.retries >= 0 and failures > self.retries
