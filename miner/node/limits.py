"""What each face of the node may hold: the guard's limits, and each face's budget of slots.

JSON-RPC, Stratum, inbound peers and the metrics page each get their own slots, so that a flood
on one face never takes a slot of another; together they must fit the process's descriptor
limit, with room kept for the chain file and for the peers the node connects to itself. The
guard (`miner.node.guard`) enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

DESCRIPTORS_KEPT = 64  # for the chain file, its WAL and SHM, the lock, logs, the kernel's needs
# Core's outbound connections (8 full-relay, 2 block-relay-only, 1 feeler): the part of
# --max-peers never given to inbound peers, and descriptors kept for the peers we connect to.
OUTBOUND_PEERS = 11
STRATUM_MINERS = 256  # --stratum-max-miners
MAX_PEERS = 125  # --max-peers, Core's -maxconnections
METRICS_CONNECTIONS = 16  # scrapers at once: the metrics page's own slots

RPC, STRATUM, PEERS, METRICS = "rpc", "stratum", "peers", "metrics"
FACES = (RPC, STRATUM, PEERS, METRICS)


@dataclass(frozen=True)
class Budget:
    """One face's connections: `slots` in all, of which anonymous ones may hold `anonymous` and
    settled ones `settled`. What settled connections may not fill is kept for the face's
    newcomers to handshake in (Stratum, peers) or for clients with credentials (JSON-RPC)."""

    slots: int
    anonymous: int
    settled: int


def handshake_budget(settled: int) -> Budget:
    """A face whose clients settle by a handshake (Stratum miners, inbound peers): `settled` of
    them, and an eighth more (at least two) for newcomers still handshaking."""
    return Budget(settled + max(2, settled // 8), max(1, settled), settled)


@dataclass(frozen=True)
class GuardLimits:
    max_connections: int = 256  # JSON-RPC's slots
    reserved: int = 32  # of them, kept for clients with credentials (anonymous ones may not fill them)
    stratum_miners: int | None = None  # Stratum's settled miners (None: no Stratum face)
    inbound_peers: int | None = None  # handshaken inbound peers (None: no peer-to-peer face)
    outbound_peers: int = 0  # descriptors kept for the peers the node connects to itself
    metrics_connections: int | None = None  # scrapers of the metrics page (None: no metrics face)
    header_timeout: float = 10.0  # s: connect (or a request's first byte) to a complete request
    idle_timeout: float = 30.0  # s an authenticated connection may wait between requests (Core's rpcservertimeout)
    body_timeout: float = 60.0  # s to receive a request's body
    write_timeout: float = 30.0  # s to hand a reply to a client that reads
    rate: float = 1000.0  # calls per second per connection
    burst: float = 2000.0
    settle_grace: float = 30.0  # s a newly settled connection is never evicted

    def serving(self, stratum: bool, listen: bool, connect: bool, metrics: bool) -> GuardLimits:
        """These limits for a node serving these faces: a face served keeps its budget (or gets
        the default one), a face not served has none, and the outbound peers keep descriptors
        when there are peers at all."""
        def keep(value: int | None, served: bool, default: int) -> int | None:
            return (default if value is None else value) if served else None
        return replace(self, stratum_miners=keep(self.stratum_miners, stratum, STRATUM_MINERS),
                       inbound_peers=keep(self.inbound_peers, listen, MAX_PEERS - OUTBOUND_PEERS),
                       outbound_peers=OUTBOUND_PEERS if listen or connect else 0,
                       metrics_connections=keep(self.metrics_connections, metrics, METRICS_CONNECTIONS))

    def budgets(self) -> dict[str, Budget]:
        """Each served face's budget."""
        out = {RPC: Budget(self.max_connections, max(1, self.max_connections - self.reserved),
                           max(1, self.max_connections - self.reserved))}
        if self.stratum_miners is not None:
            out[STRATUM] = handshake_budget(self.stratum_miners)
        if self.inbound_peers is not None:
            out[PEERS] = handshake_budget(self.inbound_peers)
        if self.metrics_connections is not None:
            out[METRICS] = Budget(self.metrics_connections, self.metrics_connections, 0)
        return out

    def fitted(self, descriptor_limit: int) -> GuardLimits:
        """The limits with every face's share lowered alike until all of them, and the outbound
        peers, fit in what `descriptor_limit` open files allow."""
        room = max(8, descriptor_limit - DESCRIPTORS_KEPT - self.outbound_peers)
        total = sum(b.slots for b in self.budgets().values())
        if total <= room:
            return self
        share = room / total
        while True:
            fitted = self._scaled(share)
            if sum(b.slots for b in fitted.budgets().values()) <= room or share < 0.01:
                return fitted
            share *= 0.95  # the handshake faces' headroom rounds up: a little less each time

    def _scaled(self, share: float) -> GuardLimits:
        def scaled(n: int | None) -> int | None:
            return None if n is None else max(1, int(n * share))
        cap = max(1, int(self.max_connections * share))
        return replace(self, max_connections=cap, reserved=max(1, self.reserved * cap // self.max_connections),
                       stratum_miners=scaled(self.stratum_miners), inbound_peers=scaled(self.inbound_peers),
                       metrics_connections=scaled(self.metrics_connections))
