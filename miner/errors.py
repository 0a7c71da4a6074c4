"""Error types that reach the user as one clear line.

Everything the CLI can blame on its input raises a subclass of `MinerError`; the CLI prints
`miner: error: <message>` and exits with the class's `exit_code` instead of showing a traceback.
"""

from __future__ import annotations


class MinerError(Exception):
    """A failure the user can act on; its message is shown verbatim."""

    exit_code = 1


class UsageError(MinerError):
    """Bad input from the command line, a config or a request (exit code 2)."""

    exit_code = 2


class InvalidHeader(UsageError):
    """Bytes or hex that are not an 80-byte Bitcoin header."""


class InvalidBits(UsageError):
    """A compact `nBits` value that Bitcoin Core would reject."""


class ChainError(MinerError):
    """The chain file is not ours, is damaged, or a block breaks a consensus rule."""


class InvalidBlock(ChainError):
    """A block fails validation; `height` names it when known, `reason` is Bitcoin Core's reject
    reason for the rule it breaks ("high-hash", "bad-txnmrklroot", ...), which `submitblock`
    answers with (BIP 22)."""

    def __init__(self, message: str, height: int | None = None, reason: str = "invalid"):
        super().__init__(message)
        self.height = height
        self.reason = reason
