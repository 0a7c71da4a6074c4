"""Bitcoin's peer-to-peer wire format: the message frame and the payloads a block-relay node
speaks. Data only: what a peer may do with them is `miner.node.p2p`'s business.

A message is a 24-byte header (network magic, command padded with NULs to 12 bytes, payload
length, first 4 bytes of the payload's sha256d) followed by the payload (Core's
`CMessageHeader`, `src/protocol.h`). Parsing is strict: a payload must be exactly as long as its
fields, every count is bounded (per message and by the bytes left) before anything is
allocated, and anything else is a `DecodeError` that ends the connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from miner.primitives.hashes import sha256d
from miner.primitives.header import HEADER_SIZE, BlockHeader
from miner.primitives.serialize import DecodeError, Reader, varint

PROTOCOL_VERSION = 70016  # wtxidrelay (BIP 339) and everything before it
MIN_PEER_VERSION = 70001  # Core's MIN_PEER_PROTO_VERSION is 31800; we need sendheaders' era
NODE_NETWORK = 1
NODE_WITNESS = 1 << 3
NODE_NETWORK_LIMITED = 1 << 10
OUR_SERVICES = NODE_NETWORK | NODE_WITNESS

HEADER_LEN = 24
MAX_MESSAGE = 4_000_000  # Core's MAX_PROTOCOL_MESSAGE_LENGTH: larger ends the connection
MAX_HEADERS = 2000  # Core's MAX_HEADERS_RESULTS
MAX_INV = 50_000  # Core's MAX_INV_SZ
MAX_LOCATOR = 101  # Core's MAX_LOCATOR_SZ
MAX_USER_AGENT = 256  # Core's MAX_SUBVERSION_LENGTH

MSG_TX = 1
MSG_BLOCK = 2
MSG_WITNESS_FLAG = 1 << 30
MSG_WITNESS_BLOCK = MSG_BLOCK | MSG_WITNESS_FLAG
MSG_WTX = 5

_FRAME = struct.Struct("<4s12sI4s")


def checksum(payload: bytes) -> bytes:
    return sha256d(payload)[:4]


def frame(magic: bytes, command: str, payload: bytes = b"") -> bytes:
    """One message as it goes on the wire."""
    name = command.encode("ascii")
    if len(name) > 12:
        raise ValueError(f"command {command!r} is longer than 12 bytes")
    return _FRAME.pack(magic, name.ljust(12, b"\0"), len(payload), checksum(payload)) + payload


@dataclass(frozen=True)
class FrameHeader:
    command: str
    length: int
    checksum: bytes


def parse_frame_header(raw: bytes, magic: bytes) -> FrameHeader:
    """The 24-byte header; DecodeError for another network's magic, a malformed command or a
    payload over MAX_MESSAGE (read before the payload is, so nothing that size is buffered)."""
    got_magic, name, length, check = _FRAME.unpack(raw)
    if got_magic != magic:
        raise DecodeError(f"network magic {got_magic.hex()}, not this chain's {magic.hex()}")
    text = name.rstrip(b"\0")
    # Core's IsCommandValid: printable ASCII, then only NUL padding.
    if not text or b"\0" in text or any(not 0x20 <= c <= 0x7E for c in text):
        raise DecodeError(f"malformed command {name!r}")
    if length > MAX_MESSAGE:
        raise DecodeError(f"message of {length} bytes is over the {MAX_MESSAGE}-byte limit")
    return FrameHeader(text.decode("ascii"), length, check)


# --------------------------------------------------------------------------- payloads

def _net_addr(services: int, port: int) -> bytes:
    """A version message's address: services, IPv4-mapped 0.0.0.0 (peers learn nothing from it;
    Core fills it in the same way for privacy), port in network order."""
    return struct.pack("<Q", services) + bytes(10) + b"\xff\xff" + bytes(4) + struct.pack(">H", port)


@dataclass(frozen=True)
class Version:
    version: int
    services: int
    timestamp: int
    nonce: int
    user_agent: str
    start_height: int
    relay: bool = False
    receiver_services: int = 0
    port: int = 0

    def serialize(self) -> bytes:
        agent = self.user_agent.encode()
        return (struct.pack("<iQq", self.version, self.services, self.timestamp)
                + _net_addr(self.receiver_services, 0) + _net_addr(self.services, self.port)
                + struct.pack("<Q", self.nonce) + varint(len(agent)) + agent
                + struct.pack("<i?", self.start_height, self.relay))

    @classmethod
    def parse(cls, payload: bytes) -> Version:
        r = Reader(payload)
        version, services, timestamp = struct.unpack("<iQq", r.take(20))
        receiver_services = struct.unpack("<Q", r.take(26)[:8])[0]
        r.take(26)  # the sender's address, as Core ignores it
        nonce = struct.unpack("<Q", r.take(8))[0]
        agent = r.var_bytes()
        if len(agent) > MAX_USER_AGENT:
            raise DecodeError(f"user agent of {len(agent)} bytes")
        start_height = struct.unpack("<i", r.take(4))[0]
        # `relay` is optional (BIP 37): absent means true. Core ignores what follows it.
        relay = r.take(1) != b"\0" if r.pos < len(payload) else True
        return cls(version, services, timestamp, nonce, agent.decode("utf-8", "replace"),
                   start_height, relay, receiver_services)


def ping_payload(nonce: int) -> bytes:
    return struct.pack("<Q", nonce)


def parse_ping(payload: bytes) -> int:
    r = Reader(payload)
    nonce = struct.unpack("<Q", r.take(8))[0]
    r.done("the ping nonce")
    return nonce


@dataclass(frozen=True)
class Inventory:
    type: int
    hash: bytes

    @property
    def is_block(self) -> bool:
        return self.type & ~MSG_WITNESS_FLAG == MSG_BLOCK


def inv_payload(items: list[Inventory]) -> bytes:
    """inv, getdata and notfound share this payload."""
    if len(items) > MAX_INV:
        raise ValueError(f"{len(items)} inventory items is over {MAX_INV}")
    return varint(len(items)) + b"".join(struct.pack("<I", i.type) + i.hash for i in items)


def parse_inv(payload: bytes) -> list[Inventory]:
    r = Reader(payload)
    n = r.count(36)
    if n > MAX_INV:
        raise DecodeError(f"{n} inventory items is over {MAX_INV}")
    items = [Inventory(r.u32(), r.take(32)) for _ in range(n)]
    r.done("the inventory")
    return items


@dataclass(frozen=True)
class GetHeaders:
    """getheaders (and getblocks): a locator, newest first, and where to stop (zero: as far as
    MAX_HEADERS allows)."""

    locator: tuple[bytes, ...]
    stop: bytes = bytes(32)
    version: int = PROTOCOL_VERSION

    def serialize(self) -> bytes:
        if len(self.locator) > MAX_LOCATOR:
            raise ValueError(f"a locator of {len(self.locator)} hashes is over {MAX_LOCATOR}")
        return (struct.pack("<I", self.version) + varint(len(self.locator))
                + b"".join(self.locator) + self.stop)

    @classmethod
    def parse(cls, payload: bytes) -> GetHeaders:
        r = Reader(payload)
        version = r.u32()
        n = r.count(32)
        if n > MAX_LOCATOR:
            raise DecodeError(f"a locator of {n} hashes is over {MAX_LOCATOR}")
        locator = tuple(r.take(32) for _ in range(n))
        stop = r.take(32)
        r.done("the stop hash")
        return cls(locator, stop, version)


def headers_payload(headers: list[BlockHeader]) -> bytes:
    """Each header followed by a transaction count of zero, as Core sends them."""
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"{len(headers)} headers is over {MAX_HEADERS}")
    return varint(len(headers)) + b"".join(h.serialize() + b"\0" for h in headers)


def parse_headers(payload: bytes) -> list[BlockHeader]:
    r = Reader(payload)
    n = r.count(HEADER_SIZE + 1)
    if n > MAX_HEADERS:
        raise DecodeError(f"{n} headers is over {MAX_HEADERS}")
    out = []
    for _ in range(n):
        out.append(BlockHeader.deserialize(r.take(HEADER_SIZE)))
        if r.take(1) != b"\0":  # a CompactSize: any other canonical value is non-zero
            raise DecodeError("a header in a headers message with a non-zero transaction count")
    r.done("the headers")
    return out


@dataclass(frozen=True)
class SendCmpct:
    announce: bool
    version: int

    @classmethod
    def parse(cls, payload: bytes) -> SendCmpct:
        r = Reader(payload)
        announce, version = struct.unpack("<?Q", r.take(9))
        r.done("sendcmpct")
        return cls(announce, version)


def parse_feefilter(payload: bytes) -> int:
    r = Reader(payload)
    rate = struct.unpack("<q", r.take(8))[0]
    r.done("feefilter")
    return rate


# Messages with an empty payload; anything in it is malformed.
EMPTY = frozenset({"verack", "sendheaders", "wtxidrelay", "sendaddrv2", "getaddr", "mempool"})

# Every message type Core knows (protocol.h's list), each counted under its own name in
# getpeerinfo; anything else a peer sends is counted under OTHER, as Core's NET_MESSAGE_TYPE_OTHER,
# so made-up names cannot grow a peer's counters.
KNOWN_COMMANDS = frozenset({
    "version", "verack", "addr", "addrv2", "sendaddrv2", "inv", "getdata", "merkleblock", "getblocks",
    "getheaders", "tx", "headers", "block", "getaddr", "mempool", "ping", "pong", "notfound", "filterload",
    "filteradd", "filterclear", "sendheaders", "feefilter", "sendcmpct", "cmpctblock", "getblocktxn",
    "blocktxn", "getcfilters", "cfilter", "getcfheaders", "cfheaders", "getcfcheckpt", "cfcheckpt",
    "wtxidrelay", "sendtxrcncl"})
OTHER = "*other*"


@dataclass
class Counters:
    """Bytes and messages by command, as getpeerinfo reports them."""

    bytes: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def add(self, command: str, size: int) -> None:
        key = command if command in KNOWN_COMMANDS else OTHER
        self.bytes[key] = self.bytes.get(key, 0) + size
        self.total += size
