"""The block index and its damage from rows written by hand (`chain.diagnose` is a pure function
over rows, apart from the store's statements)."""

from __future__ import annotations

import struct

from miner.chain.diagnose import index_from_rows
from miner.primitives.hashes import sha256d

BITS = 0x207FFFFF


def header(prev: bytes, time: int) -> bytes:
    return struct.pack("<i32s32sIII", 4, prev, bytes(32), time, BITS, 0)


def line(n: int) -> tuple[list[bytes], list[bytes]]:
    """n linked headers from a zero parent, and their hashes."""
    headers, hashes, prev = [], [], bytes(32)
    for i in range(n):
        headers.append(header(prev, 1000 + i))
        hashes.append(sha256d(headers[-1]))
        prev = hashes[-1]
    return headers, hashes


def rows(headers: list[bytes], hashes: list[bytes]) -> list[tuple]:
    return [(i, h, i, "", raw) for i, (h, raw) in enumerate(zip(hashes, headers, strict=True))]


def test_a_sound_chain_loads_whole_with_no_damage():
    headers, hashes = line(4)
    side = header(hashes[1], 2000)
    block_rows = [*rows(headers, hashes), (4, sha256d(side), 2, "", side)]
    tree, damage = index_from_rows(None, list(enumerate(hashes)), block_rows)
    assert damage is None
    assert tree.active == hashes and tree.times == [1000, 1001, 1002, 1003]
    assert tree.nodes[sha256d(side)].height == 2 and tree.next_seq == 5


def test_each_kind_of_damage_is_named_and_the_chain_stops_before_it():
    headers, hashes = line(4)
    gap = [(0, hashes[0]), (2, hashes[2])]
    tree, damage = index_from_rows(None, gap, rows(headers, hashes))
    assert damage == "block 1 is missing" and tree.active == hashes[:1]

    unlinked = list(headers)
    unlinked[2] = header(bytes(32), 1002)
    tree, damage = index_from_rows(None, list(enumerate(hashes)), rows(unlinked, hashes))
    assert damage == "block 2 does not link to the stored hash of block 1" and tree.active == hashes[:2]

    orphan = header(b"\x01" * 32, 3000)
    block_rows = [*rows(headers, hashes), (4, sha256d(orphan), 1, "", orphan)]
    tree, damage = index_from_rows(None, list(enumerate(hashes)), block_rows)
    assert damage is not None and damage.endswith("does not link to a stored parent")
    assert tree.active == hashes

    tree, damage = index_from_rows(-1, list(enumerate(hashes)), rows(headers, hashes))
    assert damage == "stray block row at height -1" and tree.active == hashes
