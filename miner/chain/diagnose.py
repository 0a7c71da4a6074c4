"""The block index built from the chain file's rows, and the first damage those rows show.

A pure function over rows (`ChainStore` reads them): no SQLite here, so every kind of damage can
be shown with rows written by hand, and loading stays apart from the statements that fetch.

A gap in the active chain, a header of the wrong size, an active block that does not link to its
parent's stored hash, a block stored at a height its place in the tree contradicts, a side block
whose parent is not stored or whose stored hash is not its header's is damage (the active blocks'
hashes are checked by their children's links): the chain still opens read-only (so `verify` and
`info` can name the block) but refuses new blocks. The index is two passes over the rows: about
0.1 s for 100,000 blocks.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from miner.chain.index import BlockTree
from miner.chain.store import short
from miner.primitives.hashes import sha256d
from miner.primitives.header import HEADER_SIZE

_TIME_BITS = struct.Struct("<II").unpack_from  # a header's time and bits, at offset 68


class _FirstDamage:
    """The first damage noted; later findings are not kept (one line names one problem)."""

    def __init__(self) -> None:
        self.found: str | None = None

    def note(self, what: str) -> None:
        if self.found is None:
            self.found = what


class _Active:
    """The active chain's columns by height, as its rows fill them."""

    def __init__(self, hashes: list[bytes]):
        n = len(hashes)
        self.hashes = hashes
        self.height_of = {h: i for i, h in enumerate(hashes)}
        self.times, self.bits, self.seqs = [0] * n, [0] * n, [-1] * n
        self.unlinked = n  # the first active block that does not link to its parent


def index_from_rows(stray_height: int | None, active_rows: Iterable[tuple[object, object]],
                    block_rows: Iterable[tuple]) -> tuple[BlockTree, str | None]:
    """Every block's index entry and the active chain (hashes, times, bits by height), with the
    first damage found (None when there is none). `active_rows`: (height, hash) by height;
    `block_rows`: (seq, hash, height, status, header) parents first; `stray_height`: the lowest
    height below genesis a row is stored at, if any."""
    damage = _FirstDamage()
    if stray_height is not None:
        damage.note(f"stray block row at height {stray_height}")
    active = _Active(_active_hashes(active_rows, damage))
    side_rows = _fill_active(active, block_rows, damage)
    good = _good_prefix(active, side_rows, damage)
    tree = BlockTree()
    tree.load_active(active.hashes[:good], active.times[:good], active.bits[:good], active.seqs[:good])
    _add_side_rows(tree, side_rows, damage)
    return tree, damage.found


def _active_hashes(rows: Iterable[tuple[object, object]], damage: _FirstDamage) -> list[bytes]:
    """The active chain's hashes up to the first gap or malformed hash."""
    hashes: list[bytes] = []
    for height, block_hash in rows:
        if height != len(hashes):
            damage.note(f"block {len(hashes)} is missing")
            break
        if not isinstance(block_hash, bytes) or len(block_hash) != 32:
            damage.note(f"block {height}'s hash in the active chain is {short(block_hash)}")
            break
        hashes.append(block_hash)
    return hashes


def _fill_active(active: _Active, rows: Iterable[tuple], damage: _FirstDamage) -> list[tuple]:
    """The active blocks' columns from their rows; returns the other rows (side blocks, and
    rows marked invalid)."""
    side_rows = []
    # Locals, not attributes, in the loop: it runs once a block (100,000 times on opening).
    height_of, hashes, times, bits, seqs = active.height_of, active.hashes, active.times, active.bits, active.seqs
    unlinked = active.unlinked
    for seq, block_hash, stored_height, status, header in rows:
        i = height_of.get(block_hash)
        if not isinstance(header, bytes) or len(header) != HEADER_SIZE:
            damage.note(f"block {i if i is not None else '?'} has a damaged header")
            continue
        if i is None or status:
            side_rows.append((seq, block_hash, stored_height, status, header))
            continue
        if stored_height != i:
            damage.note(f"block {i} is stored with height {stored_height!r:.20}")
        if i and header[4:36] != hashes[i - 1]:
            unlinked = min(unlinked, i)
        times[i], bits[i] = _TIME_BITS(header, 68)
        seqs[i] = seq
    active.unlinked = unlinked
    return side_rows


def _good_prefix(active: _Active, side_rows: list[tuple], damage: _FirstDamage) -> int:
    """How many active blocks are stored, valid and linked: the chain stops at the first that
    is not, which is damage."""
    n = len(active.hashes)
    good = min(next((i for i, s in enumerate(active.seqs) if s < 0), n), active.unlinked)
    if good < n:
        marked = {h for _, h, _, status, _ in side_rows if status}
        damage.note(f"block {good} does not link to the stored hash of block {good - 1}"
                    if good == active.unlinked else f"block {good} is active but marked invalid"
                    if active.hashes[good] in marked else f"block {good} is missing")
    return good


def _add_side_rows(tree: BlockTree, rows: list[tuple], damage: _FirstDamage) -> None:
    """Blocks off the active chain, each on its stored parent (rows come parents first)."""
    for seq, block_hash, stored_height, status, header in rows:
        if block_hash in tree.nodes:
            continue  # an active block also listed as invalid: damage named already
        up = tree.nodes.get(header[4:36])
        if up is None:
            damage.note(f"side block {short(block_hash)} does not link to a stored parent")
            continue
        if sha256d(header) != block_hash:
            damage.note(f"side block {short(block_hash)}: stored hash does not match its header")
            continue
        if stored_height != up.height + 1:
            damage.note(f"side block {short(block_hash)} is stored with height "
                        f"{stored_height!r:.20}, its place in the tree is {up.height + 1}")
        t, b = _TIME_BITS(header, 68)
        tree.add(tree.make_node(block_hash, up.hash, t, b, status or "", seq=seq))
