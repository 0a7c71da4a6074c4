"""The share difficulty each of a connection's jobs is judged at.

A miner applies a `mining.set_difficulty` to what it finds next, but shares found before the
message arrived are already on their way. Pools therefore judge a share by its job: ckpool keeps
the difficulty a job was sent under beside the new one, so that shares of earlier jobs meet the
old rule. Here a job's shares are judged at the difficulty announced before its `mining.notify`,
or at any lower one announced since (a lowered difficulty applies at once to everything the
miner may still send); a raised one applies to the jobs sent after it, and to a job sent again.

Kept apart from the session, and driven only by what was sent, so that a recorded session can be
judged by exactly the rule the server applies live.
"""

from __future__ import annotations

from collections import OrderedDict

JOBS_REMEMBERED = 16  # as many as the server keeps on one tip: older ones are refused as stale anyway


class ShareDifficulty:
    def __init__(self, keep: int = JOBS_REMEMBERED):
        self.sent: float | None = None  # the last difficulty announced to the miner
        self._jobs: OrderedDict[str, float | None] = OrderedDict()  # job id -> its shares' difficulty
        self._keep = keep

    def announced(self, difficulty: float) -> None:
        """A `mining.set_difficulty` went out."""
        self.sent = difficulty
        for job_id, floor in self._jobs.items():
            if floor is None or difficulty < floor:
                self._jobs[job_id] = difficulty

    def job_sent(self, job_id: str, clean: bool) -> None:
        """A `mining.notify` went out; with clean_jobs the earlier jobs are void."""
        if clean:
            self._jobs.clear()
        self._jobs.pop(job_id, None)
        self._jobs[job_id] = self.sent
        while len(self._jobs) > self._keep:
            self._jobs.popitem(last=False)

    def for_job(self, job_id: str, unsent: float) -> float:
        """The difficulty a share of `job_id` must meet; for a job this connection was never
        sent, the last announced (`unsent` when nothing was announced yet)."""
        floor = self._jobs.get(job_id, self.sent)
        return unsent if floor is None else floor
