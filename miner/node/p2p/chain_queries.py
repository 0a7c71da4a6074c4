"""What sync asks the chain about stored blocks, run on the chain thread (`NodeService.on_chain`):
copies of what it needs, so nothing of the chain's own index leaves that thread."""

from __future__ import annotations

from miner.chain.chain import Chain
from miner.node.p2p.headers import Anchor


def history(chain: Chain, block_hash: bytes) -> tuple[list[int], list[int]]:
    """Times and bits by height up to a stored block, copied off the chain thread's lists."""
    times, bits = chain.tree.history(chain.tree.nodes[block_hash])
    return list(times), list(bits)


def anchors(chain: Chain, hashes: list[bytes]) -> dict[bytes, Anchor]:
    """The stored blocks among `hashes`: height, chainwork and whether each is valid."""
    out = {}
    for h in hashes:
        node = chain.tree.nodes.get(h)
        if node is not None:
            out[h] = Anchor(node.height, node.chainwork, node.valid)
    return out


def branch_lengths(chain: Chain, roots: list[bytes]) -> dict[bytes, int]:
    """For each stored block of `roots`, the length of its branch off the active chain."""
    out = {}
    for root in roots:
        node = chain.tree.nodes.get(root)
        if node is not None and root not in out:
            out[root] = len(chain.tree.branch(node))
    return out
