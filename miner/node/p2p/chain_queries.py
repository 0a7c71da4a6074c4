"""What sync asks the chain about stored blocks, run on the chain thread (`NodeService.on_chain`):
copies of what it needs, so nothing of the chain's own index leaves that thread."""

from __future__ import annotations

from miner.chain.chain import Chain
from miner.chain.index import HeightView
from miner.node.p2p.headers import Anchor


class Recent(HeightView):
    """The last values of a by-height list (times or bits) from height `start` on, read like the
    whole list by the rules that look only that far back; a run's new values are appended."""

    def __init__(self, start: int, values: list[int]):
        self.first, self._values = start, values

    def __len__(self) -> int:
        return self.first + len(self._values)

    def _at(self, i: int) -> int:
        return self._values[i - self.first]

    def append(self, value: int) -> None:
        self._values.append(value)


def history(chain: Chain, block_hash: bytes, count: int) -> tuple[Recent, Recent]:
    """The times and bits of a stored block and of up to `count - 1` blocks below it, copied off
    the chain thread's lists (only those: a headers message must not cost the chain's length)."""
    times, bits = chain.history(block_hash)
    start = max(0, len(times) - count)
    return Recent(start, list(times[start:])), Recent(start, list(bits[start:]))


def anchors(chain: Chain, hashes: list[bytes]) -> dict[bytes, Anchor]:
    """The stored blocks among `hashes`: height, chainwork and whether each is valid."""
    out = {}
    for h in hashes:
        node = chain.node(h)
        if node is not None:
            out[h] = Anchor(node.height, node.chainwork, node.valid)
    return out


def branch_lengths(chain: Chain, roots: list[bytes]) -> dict[bytes, int]:
    """For each stored block of `roots`, the length of its branch off the active chain."""
    out = {}
    for root in roots:
        length = chain.branch_length(root)
        if length is not None and root not in out:
            out[root] = length
    return out
