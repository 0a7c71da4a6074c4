"""The one interface the mining loop drives, whatever the work comes from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from miner.errors import MinerError
from miner.mining.work import Job, Solution


@dataclass(frozen=True)
class Submitted:
    """What became of a solution: the height it was for, whether it was accepted, the verdict
    to show ("" for the local chain, "accepted" or the node's or pool's reason), and whether it
    was a block or a pool's share that is not one."""

    height: int
    accepted: bool
    verdict: str = ""
    kind: str = "block"  # or "share"


class WorkSource(Protocol):
    """Where jobs come from and where solutions go: the local chain file, or a node through
    getblocktemplate, or a Stratum pool. The coordinator does not know which."""

    # Set when the source gave up (its node or pools stayed away past the retries): the run ends
    # with it. The mining loop looks at it between solutions.
    failure: MinerError | None

    def start(self, on_job: Callable[[Job | None], None]) -> None:
        """Announce the first job now, and every job that replaces it (a new tip, new
        transactions, a pool's new share difficulty) as it comes; None when there is no work
        (a pool lost until another answers)."""

    def submit(self, solution: Solution) -> Submitted | None:
        """Hand a solution in; None when it was dropped unjudged (another block at its height
        came first), which the loop does not report."""

    def solved(self, job: Job) -> None:
        """`job` was just solved, whatever the verdict: announce fresh work now."""

    def stop(self) -> None:
        """Stop announcing work."""
