"""The version handshake: `version` each way, then `verack` each way.

Our `version` carries our nonce, so a connection to ourselves shows itself; a peer below
`MIN_PEER_VERSION` is let go. Anything other than version and verack before the handshake
ends (wtxidrelay and sendaddrv2 belong there) is ignored, as Core ignores it; the manager's
deadline for the whole handshake still runs.
"""

from __future__ import annotations

import time

from miner.node.p2p.peer import Misbehaving, Peer, PeerGone
from miner.primitives import p2p
from miner.primitives.serialize import DecodeError

USER_AGENT = "/pow-miner:0.1.0/"


async def send_version(peer: Peer, nonce: int, height: int, port: int) -> None:
    version = p2p.Version(p2p.PROTOCOL_VERSION, p2p.OUR_SERVICES, int(time.time()), nonce,
                          USER_AGENT, height, relay=False, port=port)
    await peer.send("version", version.serialize())


async def handshake(peer: Peer, nonce: int, height: int, port: int) -> None:
    """Until the peer is ready; an inbound peer gets our version once it sent its own."""
    while not peer.ready:
        command, payload = await peer.read()
        if command == "version":
            if peer.version is not None:
                raise Misbehaving("a second version message")
            try:
                version = p2p.Version.parse(payload)
            except DecodeError as exc:
                raise Misbehaving(f"malformed version: {exc}") from None
            if version.nonce == nonce:
                raise PeerGone("connected to ourselves")
            if version.version < p2p.MIN_PEER_VERSION:
                raise PeerGone(f"protocol version {version.version} is too old")
            peer.version = version
            if peer.inbound:
                await send_version(peer, nonce, height, port)
            await peer.send("verack")
        elif command == "verack" and peer.version is not None:
            peer.verack = True
