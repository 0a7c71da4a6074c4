"""Retarget simulation on a simulated clock.

Mining is a Poisson process: at hash rate R against target T a block takes an exponentially
distributed time with mean work(T)/R. Drawing those times and feeding them through the very
`RetargetRule` the chain enforces shows how a rule answers a hash-rate change without mining.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from miner.consensus.params import ChainParams
from miner.primitives.compact import bits_to_target, work


@dataclass
class SimulatedChain:
    times: list[int]
    bits: list[int]
    hashrates: list[float]

    def spacings(self) -> list[int]:
        return [b - a for a, b in zip(self.times, self.times[1:])]


def simulate(params: ChainParams, blocks: int, hashrate: float, jump_at: int | None = None,
             jump_factor: float = 10.0, seed: int = 1,
             pauses: dict[int, float] | None = None) -> SimulatedChain:
    """Mine `blocks` blocks after genesis; hash rate multiplies by `jump_factor` at `jump_at`;
    `pauses` maps a height to seconds of no mining just before that block is started.

    Block times are whole seconds (headers carry seconds) and obey the median-time-past rule the
    chain enforces, so the rule sees exactly what a real chain would store.
    """
    rng = random.Random(seed)
    rule = params.retarget_rule()
    times = [params.genesis_time]
    bits = [params.genesis_bits]
    rates = [hashrate]
    clock = float(params.genesis_time)
    for height in range(1, blocks + 1):
        rate = hashrate * (jump_factor if jump_at is not None and height >= jump_at else 1.0)
        b = rule.next_bits(height, times, bits)
        clock += (pauses or {}).get(height, 0.0)
        clock += rng.expovariate(rate / work(bits_to_target(b)))
        mtp = sorted(times[-11:])[len(times[-11:]) // 2]
        times.append(max(int(clock), mtp + 1))
        bits.append(b)
        rates.append(rate)
    return SimulatedChain(times, bits, rates)
