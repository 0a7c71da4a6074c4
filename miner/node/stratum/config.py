"""What the Stratum server is told: its settings and limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from miner.node.stratum.vardiff import VarDiffLimits
from miner.primitives.stratum import VERSION_MASK

MAX_LINE = 16 * 1024  # bytes; a longer line drops the connection
JOBS_KEPT = 16  # jobs on the current tip a share may still name
MIN_REFRESH = 5.0  # s between jobs for new transactions alone
BAD_MESSAGES = 20  # malformed or refused requests before a connection is dropped
MAX_WORKERS = 64  # worker names one connection may authorize


@dataclass(frozen=True)
class StratumConfig:
    payout_script: bytes = b"\x51"
    message: bytes = b"/miner node stratum/"
    extranonce1_size: int = 4
    extranonce2_size: int = 4
    difficulty: float = 1.0  # a new connection's, before vardiff or a suggestion
    vardiff: VarDiffLimits = field(default_factory=VarDiffLimits)
    version_mask: int = VERSION_MASK
    idle_timeout: float = 600.0  # s without a line from the miner
    # Refused shares in a row, none accepted between, before the connection is dropped: each
    # costs a hash, and a miner that has lost track of the work (or a flood of stale, duplicate
    # or too easy shares) gets nothing from being answered forever. An honest miner sees a few
    # stale shares after each block, then an accepted one that starts the count again.
    refused_run: int = 50
    write_timeout: float = 30.0
