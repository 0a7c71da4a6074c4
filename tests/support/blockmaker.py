"""Real blocks on any branch, for the block-tree tests: mined with hashlib at easy targets and
checked by the chain that builds them, so every block a test delivers is one `miner` itself
accepted."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from miner.chain.chain import Chain
from miner.consensus.params import REGTEST_BITS, ChainParams
from miner.primitives.block import Block
from miner.primitives.coinbase import coinbase_template
from miner.primitives.compact import bits_to_target, work
from miner.primitives.header import BlockHeader
from miner.primitives.merkle import merkle_root
from miner.primitives.serialize import varint
from miner.primitives.transaction import Transaction, txid

GENESIS_TIME = 1_700_000_000
NOW = GENESIS_TIME + 10**6  # a clock far past every block the tests make
EASY_BITS = 0x2003FFFF  # target 2^250: one hash in 64 is a hit


def params(rule: str, window: int = 4, halflife: int = 40) -> ChainParams:
    """Easy chains whose difficulty still moves: `windowed` retargets every `window` blocks,
    `asert` every block; `flat` never moves within a test (equal work per block)."""
    if rule == "flat":
        return ChainParams(name="tree-flat", spacing=10, rule="windowed", window=1000, off_by_one=False,
                           genesis_bits=EASY_BITS, pow_limit_bits=REGTEST_BITS, genesis_time=GENESIS_TIME)
    return ChainParams(name=f"tree-{rule}", spacing=10, rule=rule, window=window, off_by_one=False,
                       halflife=halflife, genesis_bits=EASY_BITS, pow_limit_bits=REGTEST_BITS,
                       genesis_time=GENESIS_TIME)


@dataclass(frozen=True)
class Made(Block):
    """A block a test made, not yet delivered."""

    @property
    def parent(self) -> bytes:
        return self.header.prev_hash


def spend(tag: bytes, script: bytes = b"\x51") -> bytes:
    """A well-formed non-coinbase transaction (one input from a made-up outpoint, one output to
    `script`, OP_TRUE unless given): the chain keeps no coin set, so it is judged by its
    structure alone."""
    return (struct.pack("<i", 1) + varint(1) + hashlib.sha256(tag).digest() + struct.pack("<I", 0) + varint(0)
            + struct.pack("<I", 0xFFFFFFFF) + varint(1) + struct.pack("<q", 1000) + varint(len(script)) + script
            + struct.pack("<I", 0))


def solve(header: BlockHeader) -> BlockHeader:
    target = bits_to_target(header.bits)
    nonce = 0
    while not header.with_nonce(nonce).meets_target(target):
        nonce += 1
    return header.with_nonce(nonce)


def make_block(chain: Chain, parent: bytes, dt: int, tag: bytes = b"", bits: int | None = None,
               bad_merkle: bool = False, coinbase_height: int | None = None) -> Made:
    """A block on `parent` (stored in `chain`), `dt` seconds after it, with the bits the parent's
    own branch demands (or `bits`), its coinbase naming its height (or `coinbase_height`, to
    break BIP 34). Not stored: the caller delivers it."""
    node = chain.node(parent)
    times, chain_bits = chain.tree.history(node)
    height = node.height + 1
    if bits is None:
        bits = chain.rule.next_bits(height, times, chain_bits)
    txs = [coinbase_template(height if coinbase_height is None else coinbase_height, b"tree " + tag).build(0)]
    root = merkle_root([txid(t) for t in txs])
    if bad_merkle:
        root = bytes(32)
    header = solve(BlockHeader(0x20000000, parent, root, node.time + dt, bits, 0))
    return Made(header, tuple(Transaction.parse(t) for t in txs))


def grow(chain: Chain, parent: bytes, n: int, dt: int, tag: bytes) -> list[Made]:
    """`n` blocks in a row on `parent`, each stored in `chain` as it is made."""
    made = []
    for i in range(n):
        block = make_block(chain, parent, dt, tag + b"%d" % i)
        chain.add_block(block, now=NOW)
        made.append(block)
        parent = block.hash
    return made


def expected_tip(genesis: bytes, genesis_bits: int, delivered: list[Made]) -> bytes:
    """The most-work tip among `delivered` (parents first), the first delivered among equals,
    computed from the headers alone (not with the chain's own index)."""
    chainwork = {genesis: work(bits_to_target(genesis_bits))}
    best, best_work = genesis, chainwork[genesis]
    for block in delivered:
        w = chainwork[block.parent] + work(bits_to_target(block.header.bits))
        chainwork[block.hash] = w
        if w > best_work:
            best, best_work = block.hash, w
    return best
