"""What `miner node` is told to serve: one value the CLI builds and `run.serve` reads, so the
node's start-up takes one argument and a face not asked for is one `None`, not several."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from miner.consensus.params import ChainParams
from miner.node.limits import GuardLimits
from miner.node.p2p.manager import PeerOptions
from miner.node.stratum.config import StratumConfig
from miner.node.stratum.ranking import TOP_WORKERS


@dataclass(frozen=True)
class RpcOptions:
    """The JSON-RPC face: where it listens, and who may call it (a user and password, else a
    cookie file written once every face listens)."""

    host: str
    port: int
    user: str | None = None
    password: str | None = None
    cookie_file: Path | None = None


@dataclass(frozen=True)
class StratumOptions:
    host: str
    port: int
    config: StratumConfig = field(default_factory=StratumConfig)


@dataclass(frozen=True)
class MetricsOptions:
    host: str
    port: int
    top_workers: int = TOP_WORKERS  # workers named in the per-worker series


@dataclass(frozen=True)
class GeneratorOptions:
    """The backends the `generate` RPC methods mine with (made at the first call)."""

    backend: str = "auto"
    threads: int | None = None
    cpu_kernel: str = "auto"


@dataclass(frozen=True)
class NodeConfig:
    """`chain_path` is served, created with `params` if it does not exist; `require_preset`: the
    preset was asked for (`--preset`), so an existing chain made with another is refused."""

    chain_path: Path
    params: ChainParams
    rpc: RpcOptions
    generator: GeneratorOptions = field(default_factory=GeneratorOptions)
    json_mode: bool = False
    limits: GuardLimits = field(default_factory=GuardLimits)
    stratum: StratumOptions | None = None
    metrics: MetricsOptions | None = None
    peers: PeerOptions | None = None
    require_preset: bool = False

    def guard_limits(self) -> GuardLimits:
        """The limits with a budget for each face served, none for the others."""
        peers = self.peers
        return self.limits.serving(self.stratum is not None, peers is not None and peers.listen is not None,
                                   peers is not None and bool(peers.connect), self.metrics is not None)
