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
from miner.mining.coordinator import MAX_UNIT, MIN_UNIT, Coordinator
from miner.mining.template import job_from_template
from miner.mining.work import Job, Solution, own_extranonce_start
from miner.node.service import NodeService


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
        assert self._backends is not None
        # Units no larger than a few times the hashes a block needs: on an easy chain (regtest's
        # bits, two hashes a block) a full-rate unit would spend `maxtries` on a handful of
        # blocks, where Core's `generatetoaddress 101` mines all 101 within its default.
        expected = (1 << 256) // (job.target + 1)
        unit_cap = max(MIN_UNIT, min(MAX_UNIT, 16 * expected))
        coordinator = Coordinator(self._backends, unit_seconds=0.1, max_unit=unit_cap).start()
        try:
            coordinator.set_job(job, own_extranonce_start(job))
            while True:
                solution = coordinator.wait_solution(timeout=0.02)
                tried = sum(s.hashes for s in coordinator.stats.values())
                if solution is not None or tried >= max_tries or self.service.closing:
                    return solution, tried
        finally:
            coordinator.stop()

    async def generate(self, nblocks: int, script: bytes, maxtries: int) -> list[str]:
        """Up to `nblocks` blocks paying `script`, within `maxtries` hashes in all; the hashes of
        the blocks that became the tip."""
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
                if await self.service.submit_block(solution.block()) is None:
                    hashes.append(solution.header.hash_hex())
        return hashes
