"""The exceptions every layer raises, one class per kind of failure.

Domain code raises what went wrong (`InvalidInput`, `InvalidBlock`, `ChainError`, ...) and knows
nothing of exit codes; only the command line (`miner.cli.main.exit_code`) turns an exception into
`miner: error: <message>` and an exit status, and the node turns it into Core's RPC error.
"""

from __future__ import annotations


class MinerError(Exception):
    """A failure the user can act on; its message is shown verbatim."""


class InvalidInput(MinerError):
    """A value handed in is malformed or out of range: hex, a header, bits, a nonce range, a
    chain parameter, a path, a height past the tip."""


class UsageError(InvalidInput):
    """The command line itself is wrong: an unknown option, a bad combination of options."""


class InvalidHeader(InvalidInput):
    """Bytes or hex that are not an 80-byte Bitcoin header."""


class InvalidBits(InvalidInput):
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
