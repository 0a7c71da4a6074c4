"""Stratum jobs: the node's block template cut the way mining.notify sends it, and a share
checked the way the miner built it.

A job is the template's coinbase split around an extranonce of `extranonce1 + extranonce2`
bytes (extranonce1 fixed per connection by the server, extranonce2 rolled by the miner), the
merkle branch from the coinbase to the root, and the header fields. A submitted share is
rebuilt from those parts exactly as the miner built it (coinbase, merkle root, header with the
rolled version bits and the miner's ntime and nonce) and hashed; nothing the miner says about
its hash is taken on trust.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from miner.consensus.pow import algorithm
from miner.mining.template import job_from_template
from miner.mining.work import Job
from miner.primitives import stratum as sp
from miner.primitives.block import Block
from miner.primitives.coinbase import CoinbaseTemplate
from miner.primitives.compact import bits_to_target
from miner.primitives.hashes import sha256d
from miner.primitives.header import BlockHeader
from miner.primitives.merkle import root_from_branch
from miner.primitives.transaction import Transaction
from miner.primitives.witness import with_reserved_value

MAX_FUTURE = 7200  # s: Core's MAX_FUTURE_BLOCK_TIME, the latest ntime a block may carry


@dataclass(frozen=True)
class Share:
    header: BlockHeader
    coinbase: bytes
    hash: bytes  # the proof-of-work hash of the header (sha256d or scrypt), header byte order

    @property
    def value(self) -> int:
        return int.from_bytes(self.hash, "little")


class ShareVerdict(enum.Enum):
    """What a share that passed every check is: a block for the chain, or only a pool's share."""

    BLOCK = "block"
    SHARE = "share"


@dataclass(frozen=True)
class StratumJob:
    job_id: str
    job: Job
    mintime: int

    @classmethod
    def from_template(cls, job_id: str, template: dict, payout_script: bytes, message: bytes,
                      extranonce1_size: int, extranonce2_size: int, pow: str = "sha256d") -> StratumJob:
        job = job_from_template(template, payout_script, message, extranonce1_size + extranonce2_size)
        if pow != "sha256d":
            job = replace(job, pow=pow)
        mintime = template.get("mintime")
        return cls(job_id, job, mintime if isinstance(mintime, int) else job.time)

    @classmethod
    def from_notify(cls, params: list, extranonce_size: int, pow: str = "sha256d") -> StratumJob:
        """The job a `mining.notify` announced, rebuilt from its fields alone: what a recorded
        session's shares are judged against, with the same `share` and `verdict` as live ones.
        The block target is the one `nbits` stands for; the ntime floor is the job's own time."""
        job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime = params[:8]
        prev = bytes.fromhex(sp.stratum_prevhash(bytes.fromhex(prevhash)))  # the word swap undoes itself
        bits = int(nbits, 16)
        job = Job(job_id=job_id, height=0, version=int(version, 16), prev_hash=prev,
                  coinbase=CoinbaseTemplate(bytes.fromhex(coinb1), bytes.fromhex(coinb2), extranonce_size),
                  branch=tuple(bytes.fromhex(b) for b in branch), time=int(ntime, 16), bits=bits,
                  target=bits_to_target(bits), pow=pow)
        return cls(job_id, job, job.time)

    def notify_params(self, clean: bool) -> list:
        job = self.job
        return [self.job_id, sp.stratum_prevhash(job.prev_hash), job.coinbase.coinb1.hex(), job.coinbase.coinb2.hex(),
                [b.hex() for b in job.branch], sp.word_hex(job.version), sp.word_hex(job.bits), sp.word_hex(job.time),
                clean]

    def share(self, extranonce1: bytes, extranonce2: bytes, ntime: int, nonce: int, version: int) -> Share:
        coinbase = self.job.coinbase.coinb1 + extranonce1 + extranonce2 + self.job.coinbase.coinb2
        root = root_from_branch(sha256d(coinbase), self.job.branch)
        header = BlockHeader(version, self.job.prev_hash, root, ntime, self.job.bits, nonce)
        return Share(header, coinbase, algorithm(self.job.pow).hash(header.serialize()))

    @property
    def network_difficulty(self) -> float:
        """The block target as a share difficulty (counted as the chain's pools count it): no
        connection is given a share difficulty above it, or its miners would pass over blocks."""
        return sp.diff1_target(self.job.pow) / self.job.target

    def verdict(self, share: Share, difficulty: float) -> ShareVerdict:
        """BLOCK when the share meets the block target, whatever share difficulty is in force: a
        block is never refused for being a poor share. Otherwise SHARE when it meets the share
        target of `difficulty` (exactly: integer targets, the float taken as the rational it is),
        else refused with 23, the code miners show as low difficulty."""
        if share.value <= self.job.target:
            return ShareVerdict.BLOCK
        if share.value > sp.difficulty_to_target(difficulty, self.job.pow):
            raise sp.StratumError(sp.LOW_DIFFICULTY, "Low difficulty share")
        return ShareVerdict.SHARE

    def block(self, share: Share) -> Block:
        """The block a share that meets the block target makes, as submitblock would take it."""
        coinbase = Transaction.parse(share.coinbase)
        if self.job.witness:
            coinbase = with_reserved_value(coinbase)
        return Block(share.header, (coinbase, *self.job.extra_txs))
