"""A node's peer-to-peer face in the test's own event loop: the chain service, the guard and the
peer manager as `miner node` puts them together, listening on 127.0.0.1, with no process to
start. The in-process P2P tests use it where a timeout or a limit has to be shortened (a stall
of 1 s instead of 10 s) or a log line read; the manager, its sockets and the chain thread are
closed when the block ends, also on failure."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from miner.chain.chain import Chain
from miner.consensus.params import ChainParams, preset
from miner.node.guard import Guard, GuardLimits
from miner.node.p2p.bans import BanList
from miner.node.p2p.manager import PeerManager
from miner.node.service import NodeService


@dataclass
class LiveNode:
    manager: PeerManager
    service: NodeService
    events: list[dict] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.manager.port is not None
        return self.manager.port

    @property
    def height(self) -> int:
        assert self.service.tip is not None
        return self.service.tip.height

    @property
    def tip(self) -> bytes:
        assert self.service.tip is not None
        return self.service.tip.hash

    def status(self, status: str) -> list[dict]:
        return [e for e in self.events if e.get("event") == "peer" and e.get("status") == status]


def regtest_core(path: Path) -> Path:
    """An empty regtest-core chain file (Core's regtest genesis, shared by every node)."""
    Chain.create(path, preset("regtest-core", 0)).close()
    return path


@contextlib.asynccontextmanager
async def live_node(path: Path, connect: tuple[tuple[str, int], ...] = (), params: ChainParams | None = None,
                    **options):
    """A node on the chain file at `path` (made with `regtest_core` or a test's own builder),
    listening on a free port of 127.0.0.1 and connecting out to `connect`. `options` go to the
    PeerManager (shorter timeouts, smaller limits)."""
    service = NodeService(path)
    node = None
    try:
        await service.open(params or preset("regtest-core", 0))
        assert service.chain is not None
        node = LiveNode(None, service)  # type: ignore[arg-type]
        node.manager = PeerManager(service, Guard(GuardLimits(inbound_peers=114)), service.chain.params, BanList(None),
                                   lambda event, line: node.events.append(event), **options)
        await node.manager.start(("127.0.0.1", 0), list(connect))
        yield node
    finally:
        if node is not None and node.manager is not None:
            await node.manager.close()
            await node.manager.guard.close()
        await service.close()


async def until(check, within: float = 10.0, what: str = "condition", every: float = 0.02):
    """Wait, in the event loop, for `check()` to be truthy; its value, or AssertionError."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        await asyncio.sleep(every)
    raise AssertionError(f"{what} not reached within {within} s")
