"""Block locators and headers for a peer: where two chains part, and what follows on ours.

A locator lists active-chain hashes from the tip back to genesis, every block for the first
ten and then doubling the step (Core's `CChain::GetLocator`), so a peer finds the last block
both chains share in a few dozen hashes whatever the length of a fork. Read on the chain
thread: these read the chain file.
"""

from __future__ import annotations

from miner.chain.chain import Chain
from miner.primitives.header import BlockHeader

LOCATOR_DENSE = 10


def locator_heights(height: int) -> list[int]:
    """Heights of a locator from `height` down: one by one for ten, then doubling, genesis last."""
    out, step, h = [], 1, height
    while h > 0:
        out.append(h)
        if len(out) >= LOCATOR_DENSE:
            step *= 2
        h -= step
    out.append(0)
    return out


def locator(chain: Chain) -> list[bytes]:
    return [chain.tree.active[h] for h in locator_heights(chain.height)]


def fork_height(chain: Chain, hashes: list[bytes] | tuple[bytes, ...]) -> int:
    """The height of the first locator hash on our active chain (genesis when none is: a peer
    on the same network shares at least genesis)."""
    for h in hashes:
        node = chain.tree.nodes.get(h)
        if node is not None and chain.tree.is_active(node):
            return node.height
    return 0


def active_headers(chain: Chain, first: int, count: int) -> list[BlockHeader]:
    """Up to `count` headers of the active chain from height `first` on, in one query."""
    last = min(chain.height, first + count - 1)
    if last < first:
        return []
    return [BlockHeader.deserialize(raw) for raw in chain.store.active_headers(first, last)]


def headers_after(chain: Chain, hashes: tuple[bytes, ...], stop: bytes, limit: int) -> list[BlockHeader]:
    """What a getheaders asks for: active headers after the fork point, up to `limit`, ending at
    `stop` when it is among them."""
    if not hashes:  # Core: an empty locator asks for the stop block's header alone
        header = header_of(chain, stop)
        return [header] if header is not None else []
    headers = active_headers(chain, fork_height(chain, hashes) + 1, limit)
    if stop != bytes(32):
        for i, h in enumerate(headers):
            if h.hash() == stop:
                return headers[:i + 1]
    return headers


def header_of(chain: Chain, block_hash: bytes) -> BlockHeader | None:
    raw = chain.store.header_row(block_hash)
    return BlockHeader.deserialize(raw) if raw is not None else None
