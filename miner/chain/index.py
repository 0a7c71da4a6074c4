"""The block index in memory: every stored block by hash, its chainwork, and the active chain.

The chain file stores blocks; this module decides which of them form the active chain. The rule
is Bitcoin's: the valid tip with the most cumulative work (Core's GetBlockProof, 2^256 /
(target + 1), summed from genesis), and between tips of equal work the one seen first. It holds
no SQLite and does no I/O, so the selection can be tested (and property-tested) on its own.

Chainwork is computed from each header's bits when the index is built rather than stored, so it
can never disagree with the headers it sums.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from miner.primitives.compact import decode_compact, work

GENESIS_PARENT = bytes(32)


@dataclass(slots=True)
class Node:
    hash: bytes
    parent: bytes
    height: int
    time: int
    bits: int
    chainwork: int
    seq: int  # arrival order: of two tips with equal work the lower seq (seen first) wins
    status: str = ""  # "" when valid, else why the block is invalid

    @property
    def valid(self) -> bool:
        return not self.status


@dataclass(frozen=True)
class TipChange:
    """What a switch of the active tip did: blocks taken off (tip first) and put on (fork first)."""

    disconnected: tuple[bytes, ...]
    connected: tuple[bytes, ...]
    tip: bytes
    height: int


@dataclass(frozen=True)
class ChainTip:
    """One row of `miner chain tips` (Core's getchaintips)."""

    height: int
    hash: bytes
    branch_length: int
    status: str  # "active", "valid-fork" or "invalid"


_WORK_CACHE: dict[int, int] = {}


def block_work(bits: int) -> int:
    """Work of one block with these bits (cached: a chain has few distinct bits values)."""
    w = _WORK_CACHE.get(bits)
    if w is None:
        target, negative, overflow = decode_compact(bits)
        w = 0 if negative or overflow or target == 0 else work(target)
        if len(_WORK_CACHE) < 100_000:
            _WORK_CACHE[bits] = w
    return w


class HeightView(Sequence[int]):
    """Values by height (times or bits) read like a list, held in parts: the retarget rules and
    median time past index and slice it, and a subclass says where height i's value is. Heights
    below `first` are not held (a view of the last values only)."""

    first = 0

    def _at(self, i: int) -> int:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> list[int]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not self.first <= i < len(self):
            raise IndexError(i)
        return self._at(i)


class BranchView(HeightView):
    """A block's ancestors' values by height, without copying the active chain: heights up to the
    fork come from the active list, the rest from the branch."""

    def __init__(self, base: Sequence[int], fork: int, branch: Sequence[int]):
        self._base, self._fork, self._branch = base, fork, branch  # base[0..fork] shared

    def __len__(self) -> int:
        return self._fork + 1 + len(self._branch)

    def _at(self, i: int) -> int:
        return self._base[i] if i <= self._fork else self._branch[i - self._fork - 1]


class NodeIndex:
    """hash -> Node for every known block. Blocks on the active chain live in the tree's lists by
    height and become Node objects only when looked up, so a 100,000-block chain opens without
    building 100,000 objects; blocks off the active chain are kept as Nodes."""

    def __init__(self, tree: BlockTree):
        self._tree = tree
        self.side: dict[bytes, Node] = {}
        self.height_of: dict[bytes, int] = {}  # active blocks only

    def get(self, block_hash: bytes, default: Node | None = None) -> Node | None:
        i = self.height_of.get(block_hash)
        if i is not None:
            return self._tree.active_node(i)
        return self.side.get(block_hash, default)

    def __getitem__(self, block_hash: bytes) -> Node:
        node = self.get(block_hash)
        if node is None:
            raise KeyError(block_hash)
        return node

    def __setitem__(self, block_hash: bytes, node: Node) -> None:
        self.side[block_hash] = node  # a new block is off the active chain until connected

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self.height_of or block_hash in self.side

    def __len__(self) -> int:
        return len(self.height_of) + len(self.side)

    def __bool__(self) -> bool:
        return len(self) > 0

    def values(self) -> Iterator[Node]:
        for i in range(len(self._tree.active)):
            yield self._tree.active_node(i)
        yield from list(self.side.values())


class BlockTree:
    """All known blocks, and the active chain as lists by height (hashes, times, bits, chainwork,
    arrival order)."""

    def __init__(self) -> None:
        self.nodes = NodeIndex(self)
        self.active: list[bytes] = []
        self.times: list[int] = []
        self.bits: list[int] = []
        self.works: list[int] = []  # chainwork up to and including each active block
        self.seqs: list[int] = []
        self.next_seq = 0

    # ------------------------------------------------------------------ building

    def active_node(self, i: int) -> Node:
        return Node(self.active[i], self.active[i - 1] if i else GENESIS_PARENT, i, self.times[i],
                    self.bits[i], self.works[i], self.seqs[i], "")

    def load_active(self, hashes: list[bytes], times: list[int], bits: list[int], seqs: list[int]) -> None:
        """The active chain, genesis first (all valid); chainwork is summed here."""
        works, total = [], 0
        for b in bits:
            total += block_work(b)
            works.append(total)
        self.active, self.times, self.bits, self.works, self.seqs = hashes, times, bits, works, seqs
        self.nodes.height_of = {h: i for i, h in enumerate(hashes)}
        if seqs:
            self.next_seq = max(self.next_seq, max(seqs) + 1)

    def add(self, node: Node) -> None:
        """A block off the active chain (or, with an empty tree, genesis: it becomes active)."""
        if not self.active and node.height == 0 and node.valid:
            self.connect(node)
        else:
            self.nodes[node.hash] = node
        self.next_seq = max(self.next_seq, node.seq + 1)

    def discard(self, node: Node) -> None:
        """Forget a node added for a store that did not commit."""
        if self.nodes.side.get(node.hash) is node:
            del self.nodes.side[node.hash]
            self.next_seq = node.seq

    def make_node(self, block_hash: bytes, parent: bytes, time: int, bits: int,
                  status: str = "", seq: int | None = None) -> Node:
        """A node for a new block on a known parent (or genesis, with GENESIS_PARENT)."""
        up = self.nodes.get(parent)
        height = up.height + 1 if up else 0
        chainwork = (up.chainwork if up else 0) + block_work(bits)
        return Node(block_hash, parent, height, time, bits, chainwork,
                    self.next_seq if seq is None else seq, status)

    def connect(self, node: Node) -> None:
        """Append `node` (a child of the active tip) to the active chain."""
        self.nodes.side.pop(node.hash, None)
        self._append(node.hash, node.time, node.bits, node.chainwork, node.seq)

    def extend(self, block_hash: bytes, time: int, bits: int, seq: int) -> None:
        """Append a new valid child of the active tip without building its Node (a pass over
        a whole chain, as `verify` makes, does this once a block)."""
        self._append(block_hash, time, bits, self.works[-1] + block_work(bits), seq)
        self.next_seq = max(self.next_seq, seq + 1)

    def _append(self, block_hash: bytes, time: int, bits: int, chainwork: int, seq: int) -> None:
        self.nodes.height_of[block_hash] = len(self.active)
        self.active.append(block_hash)
        self.times.append(time)
        self.bits.append(bits)
        self.works.append(chainwork)
        self.seqs.append(seq)

    def _disconnect_above(self, fork: int) -> tuple[bytes, ...]:
        gone = []
        while len(self.active) > fork + 1:
            node = self.active_node(len(self.active) - 1)
            for column in (self.active, self.times, self.bits, self.works, self.seqs):
                column.pop()
            del self.nodes.height_of[node.hash]
            self.nodes.side[node.hash] = node
            gone.append(node.hash)
        return tuple(gone)

    # ------------------------------------------------------------------ reading

    @property
    def tip(self) -> Node:
        return self.nodes[self.active[-1]]

    def is_active(self, node: Node) -> bool:
        return node.height < len(self.active) and self.active[node.height] == node.hash

    def branch(self, node: Node) -> list[Node]:
        """Blocks from just after the fork point up to `node` (empty if `node` is active)."""
        out: list[Node] = []
        while not self.is_active(node):
            out.append(node)
            node = self.nodes[node.parent]
        out.reverse()
        return out

    def history(self, parent: Node) -> tuple[Sequence[int], Sequence[int]]:
        """Times and bits of `parent` and all its ancestors, indexed by height: what a child of
        `parent` is judged against."""
        if self.is_active(parent) and parent.height == len(self.active) - 1:
            return self.times, self.bits
        side = self.branch(parent)
        fork = parent.height - len(side)
        return (BranchView(self.times, fork, [n.time for n in side]),
                BranchView(self.bits, fork, [n.bits for n in side]))

    def invalid_ancestor(self, node: Node) -> Node | None:
        """The nearest invalid block at or below `node`, if any."""
        while True:
            if not node.valid:
                return node
            if node.height == 0 or self.is_active(node):
                return None  # the active chain holds only valid blocks
            node = self.nodes[node.parent]

    def best_tip(self) -> Node:
        """The valid block with the most chainwork, the first seen among equals. The active
        chain's best block is its tip, so only the tip and the side blocks compete."""
        best = self.tip
        for n in self.nodes.side.values():
            if _beats(n, best):
                best = n
        return best

    def better_than_tip(self, node: Node) -> bool:
        return _beats(node, self.tip)

    def reorg_to(self, node: Node) -> TipChange:
        """Make `node` the active tip in memory; returns what changed."""
        side = self.branch(node)
        fork = node.height - len(side)
        gone = self._disconnect_above(fork)
        for n in side:
            self.connect(n)
        return TipChange(gone, tuple(n.hash for n in side), node.hash, node.height)

    def tips(self) -> list[ChainTip]:
        """Every block without children, like Core's getchaintips: the active tip first, then
        by height. Branch length counts the blocks after the fork from the active chain."""
        tip = self.tip
        rows = [ChainTip(tip.height, tip.hash, 0, "active")]
        parents = {n.parent for n in self.nodes.side.values()}
        for n in self.nodes.side.values():
            if n.hash in parents:
                continue
            rows.append(ChainTip(n.height, n.hash, len(self.branch(n)),
                                 "invalid" if self.invalid_ancestor(n) else "valid-fork"))
        rows[1:] = sorted(rows[1:], key=lambda r: (-r.height, r.hash))
        return rows


def _beats(node: Node, other: Node) -> bool:
    """Whether valid `node` should be active rather than `other`: more work, or as much and seen
    first (Core's rule)."""
    return node.valid and (node.chainwork > other.chainwork
                           or (node.chainwork == other.chainwork and node.seq < other.seq))
