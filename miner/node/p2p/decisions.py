"""What sync decides and the peer manager carries out.

Sync owns the download state and judges what peers send; the manager owns the connections.
Sync never writes to a socket or closes one: each of its entry points returns a list of these,
and the manager turns them into messages, goodbyes and bans (one place for each).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AskBlocks:
    """Send `getdata` for these blocks (already counted in flight against the peer)."""

    peer: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class AskHeaders:
    """Send `getheaders` with this locator."""

    peer: int
    locator: tuple[bytes, ...]


@dataclass(frozen=True)
class Drop:
    """End the connection without a ban. `stalled`: it announced blocks and did not deliver them
    (a stall, or `notfound`); the manager bans an address that does so again (a repeat offender)."""

    peer: int
    reason: str
    stalled: bool = False


@dataclass(frozen=True)
class Punish:
    """It misbehaved: drop it, and ban its address unless the user asked for the connection."""

    peer: int
    reason: str


@dataclass(frozen=True)
class StoreArrived:
    """Blocks wait to be stored: the manager runs sync's storer unless it is running."""


Decision = AskBlocks | AskHeaders | Drop | Punish | StoreArrived
