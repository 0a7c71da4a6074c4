"""Work as the tests hand it out: a `Job` for the coordinator, and mining.notify's parameters for a
scripted pool."""

from __future__ import annotations

import time

from miner.mining.work import Job
from miner.primitives.coinbase import coinbase_template

from .stratum_miner import dsha


def make_job(target, extranonce_size=1, job_id="j", prev=b"\x01" * 32):
    return Job(job_id=job_id, height=1, version=0x20000000, prev_hash=prev,
               coinbase=coinbase_template(1, b"test", extranonce_size=extranonce_size), branch=(),
               time=1_700_000_000, bits=0x207FFFFF, target=target)


EASY = 2 ** -20  # a share in about 4,000 hashes: several a second on the reference backend


def job_params(job_id: str, clean: bool = True, ntime: int | None = None) -> list:
    return [job_id, "00" * 32, "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0d03",
            "ffffffff0100f2052a01000000015100000000", [dsha(b"tx").hex()], "20000000", "1d00ffff",
            f"{ntime or int(time.time()):08x}", clean]
