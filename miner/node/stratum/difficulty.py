"""The share difficulty a connection's shares are judged at.

A miner applies a `mining.set_difficulty` to what it finds next, but shares found before the
message arrived are already on their way. Pools (ckpool among them) therefore keep the previous
difficulty alongside the new one until the next `mining.notify`: a share that meets either is
accepted in between, and only the new one counts after. Kept apart from the session, and driven
only by what was sent, so that a recorded session can be judged by exactly the rule the server
applies live.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DifficultyInForce:
    sent: float | None = None  # the last difficulty announced to the miner
    previous: float | None = None  # the one before it, until the next job is sent

    def announced(self, difficulty: float) -> None:
        """A `mining.set_difficulty` went out."""
        self.previous, self.sent = self.sent, difficulty

    def job_sent(self) -> None:
        """A `mining.notify` went out: from now on only the last announced difficulty counts."""
        self.previous = None

    def in_force(self, unsent: float) -> float:
        """The lowest difficulty a share may meet now; `unsent` when nothing was announced yet."""
        current = self.sent if self.sent is not None else unsent
        return current if self.previous is None else min(current, self.previous)
