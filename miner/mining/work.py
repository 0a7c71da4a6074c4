"""Jobs and solutions.

A `Job` is a block template: everything needed to build headers for any extranonce. The
coordinator turns it into `KernelWork` (one concrete header prefix) for the backends, and a
nonce that meets the target comes back as a `Solution`, which builds the block to submit.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from miner.backends.work import KernelWork
from miner.consensus.pow import algorithm
from miner.errors import InvalidInput
from miner.primitives.block import Block
from miner.primitives.coinbase import CoinbaseTemplate
from miner.primitives.compact import bits_to_target
from miner.primitives.header import BlockHeader
from miner.primitives.merkle import root_from_branch
from miner.primitives.transaction import Transaction, txid
from miner.primitives.witness import with_reserved_value


@dataclass(frozen=True)
class Job:
    """A block template that the coordinator turns into work for any extranonce.

    `witness`: the template commits to witnesses (BIP 141), so the submitted coinbase carries
    the witness reserved value. `longpoll_id`: the node's long-poll id for this template, when
    it came from getblocktemplate. `shares`: the target is a pool's share target, so a solution
    does not end the job; the search goes on through the rest of its space."""

    job_id: str
    height: int
    version: int
    prev_hash: bytes
    coinbase: CoinbaseTemplate
    branch: tuple[bytes, ...]
    time: int
    bits: int
    target: int
    extra_txs: tuple[Transaction, ...] = ()
    clean: bool = True
    witness: bool = False
    longpoll_id: str | None = None
    shares: bool = False
    pow: str = "sha256d"  # the chain's proof of work (`consensus.pow`)

    def coinbase_tx(self, extranonce: int) -> bytes:
        return self.coinbase.build(extranonce)

    def merkle_root(self, extranonce: int) -> bytes:
        return root_from_branch(txid(self.coinbase_tx(extranonce)), self.branch)

    def header(self, extranonce: int, nonce: int = 0, time: int | None = None) -> BlockHeader:
        return BlockHeader(self.version, self.prev_hash, self.merkle_root(extranonce),
                           self.time if time is None else time, self.bits, nonce)

    def work(self, extranonce: int) -> KernelWork:
        prefix = self.header(extranonce).serialize()[:76]
        return KernelWork(prefix, self.target, extranonce, self.pow)

    def block(self, extranonce: int, nonce: int) -> Block:
        """The block this job makes with `extranonce` and `nonce`, as it is submitted."""
        coinbase = Transaction.parse(self.coinbase_tx(extranonce))
        if self.witness:
            coinbase = with_reserved_value(coinbase)
        return Block(self.header(extranonce, nonce), (coinbase, *self.extra_txs))

    def is_block(self, extranonce: int, nonce: int) -> bool:
        """Whether this header meets the block target of `bits` (a pool's share may)."""
        try:
            block_target = bits_to_target(self.bits)
        except (InvalidInput, ValueError):
            return False
        header = self.header(extranonce, nonce).serialize()
        return int.from_bytes(algorithm(self.pow).hash(header), "little") <= block_target

    @property
    def max_extranonce(self) -> int:
        return (1 << (8 * self.coinbase.extranonce_size)) - 1


def own_extranonce_start(job: Job) -> int:
    """A random first extranonce in the lower half of the job's space, drawn for each job: two
    processes mining the same tip (the same coinbase, the same time) would otherwise hash the
    same headers and find the same block, and with 8 extranonce bytes two draws meet with odds
    of 2^-63. The upper half leaves room to roll."""
    return secrets.randbelow((job.max_extranonce + 1) // 2 or 1)


@dataclass(frozen=True)
class Solution:
    """A nonce that met the job's target, re-verified on the host."""

    job: Job
    extranonce: int
    nonce: int
    backend: str = ""

    @property
    def header(self) -> BlockHeader:
        return self.job.header(self.extranonce, self.nonce)

    def block(self) -> Block:
        return self.job.block(self.extranonce, self.nonce)
