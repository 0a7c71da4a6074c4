"""generatetoaddress: blocks mined with the node's own backends on its own templates.

The job comes from the node's current template through the one template-to-job builder
(`miner.mining.template`), the nonce search through the same coordinator as `miner mine`, and
the solved block goes to the same submit path as any block, as a `Block`: never through hex.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from miner.backends.base import Backend
from miner.backends.registry import make_backends
from miner.chain.outcome import BlockResult
from miner.mining.coordinator import MAX_UNIT, Coordinator
from miner.mining.template import job_from_template
from miner.mining.work import Job, Solution, own_extranonce_start
from miner.node.service import NodeService

# The smallest unit generate hands a backend: regtest's blocks take two hashes, and every nonce a
# unit holds is hashed before its hits are looked at, so units of the miner's 4,096 nonces made
# hashing most of the time a block took.
_MIN_UNIT = 256


class Generator:
    """Mines blocks for the node on request, with backends made once, at the first request."""

    def __init__(self, service: NodeService, backend_spec: str, threads: int | None, cpu_kernel: str):
        self.service = service
        self.spec, self.threads, self.cpu_kernel = backend_spec, threads, cpu_kernel
        self._backends: list[Backend] | None = None
        self._lock = asyncio.Lock()

    def _make(self) -> list[Backend]:
        assert self.service.chain is not None
        backends = make_backends(self.spec, threads=self.threads, cpu_kernel=self.cpu_kernel,
                                 pow=self.service.chain.params.pow)
        for b in backends:
            b.warm_up()
        return backends

    def _solve(self, job: Job, max_tries: int) -> tuple[Solution | None, int]:
        """A solution of `job` within `max_tries` failed nonces, and the nonces it spent, counted
        as Core counts `maxtries` (`BackendStats.tries`): the winning nonce and the hashes a
        kernel did past it are free, so regtest's two hashes a block cost about one try each,
        and no nonce past the budget is handed out."""
        assert self._backends is not None
        # Units no larger than a few times the hashes a block needs: a backend hashes at least a
        # whole unit (or piece) before it looks at its hits, so on an easy chain (regtest's bits,
        # two hashes a block) a full-rate unit would spend a tenth of a second (`unit_seconds`) on each.
        expected = (1 << 256) // (job.target + 1)
        unit_cap = max(_MIN_UNIT, min(MAX_UNIT, 16 * expected))
        coordinator = Coordinator(self._backends, unit_seconds=0.1, max_unit=unit_cap).start()
        solution = None
        try:
            coordinator.set_job(job, own_extranonce_start(job), budget=max_tries)
            while solution is None and not self.service.closing:
                solution = coordinator.wait_solution(timeout=0.02)
                if solution is None and coordinator.searched_out():
                    solution = coordinator.wait_solution(timeout=0)  # one queued as the last unit ended
                    break
        finally:
            coordinator.stop()
        return solution, coordinator.tries()

    async def generate(self, nblocks: int, script: bytes, maxtries: int) -> list[str]:
        """Up to `nblocks` blocks paying `script`, within `maxtries` failed nonces across the
        whole call, as Core's generateBlocks spends them; the hashes of the blocks that became the
        tip, fewer than asked (or none) when the tries ran out, as Core answers."""
        loop = asyncio.get_running_loop()
        hashes: list[str] = []
        async with self._lock:
            if self._backends is None:
                self._backends = await loop.run_in_executor(None, self._make)
            left = maxtries
            while len(hashes) < nblocks and left > 0 and not self.service.closing:
                job = replace(job_from_template(self.service.template(), script, b"miner node"),
                              pow=self.service.chain.params.pow)
                solution, tried = await loop.run_in_executor(None, self._solve, job, left)
                left -= tried
                if solution is None:
                    break
                outcome = await self.service.submit_block(solution.block())
                if outcome.result is BlockResult.CONNECTED:
                    hashes.append(solution.header.hash_hex())
        return hashes
