"""Whether a chain can be mined at all by this computer's clock."""

from __future__ import annotations

import time

from miner.chain.chain import Chain
from miner.errors import ChainError


def _utc(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def check_clock(chain: Chain, now: int) -> None:
    """Refuse to mine when no valid next block can exist at `now`: its time must be above the
    median time past and at most max_future ahead of the clock."""
    earliest = chain.min_next_time()
    limit = chain.params.max_future
    if earliest > now + limit:
        raise ChainError(
            f"{chain.path}: the chain's recent blocks are ahead of this computer's clock: the next "
            f"block needs a time of at least {earliest} ({_utc(earliest)} UTC), more than "
            f"{limit} s ahead of now ({_utc(now)} UTC); fix the clock, or wait "
            f"{earliest - (now + limit)} s")
