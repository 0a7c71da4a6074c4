"""Bitcoin's merkle tree: the root a header commits to, and the branch Stratum sends a miner so
that rolling the coinbase's extranonce costs two hashes a level."""

from __future__ import annotations

from collections.abc import Sequence

from miner.errors import InvalidBlock
from miner.primitives.hashes import sha256d


def _next_level(level: list[bytes]) -> list[bytes]:
    """Pair up and hash with sha256d, the last hash paired with itself on an odd level."""
    if len(level) % 2:
        level.append(level[-1])
    return [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """Bitcoin's merkle root of transaction ids (a single id is its own root)."""
    if not hashes:
        raise InvalidBlock("a block needs at least one transaction")
    level = list(hashes)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def merkle_branch(hashes: Sequence[bytes]) -> list[bytes]:
    """Sibling hashes from the first leaf (the coinbase) up to the root, as Stratum sends them."""
    branch: list[bytes] = []
    level = list(hashes)
    while len(level) > 1:
        branch.append(level[1])  # there is one on every level above a single hash
        level = _next_level(level)  # (which pairs an odd level's last hash with itself)
    return branch


def root_from_branch(leaf: bytes, branch: Sequence[bytes]) -> bytes:
    """Merkle root of a tree whose first leaf is `leaf`, given its branch."""
    h = leaf
    for sibling in branch:
        h = sha256d(h + sibling)
    return h
