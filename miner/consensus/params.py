"""Chain parameters and the presets `miner` ships with.

Parameters are fixed when a chain is created and stored in it as JSON, so a chain file always
validates under the rules it was mined with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from miner.consensus.pow import SHA256D, PowAlgorithm
from miner.consensus.retarget import (
    AsertRule,
    CappedAsertRule,
    RetargetRule,
    WindowedRule,
)
from miner.errors import InvalidInput
from miner.primitives.coinbase import coinbase_template
from miner.primitives.compact import bits_to_target, target_to_bits
from miner.primitives.header import BlockHeader
from miner.primitives.merkle import merkle_root
from miner.primitives.transaction import txid

RULES = ("asert", "asert-capped", "windowed")


@dataclass(frozen=True)
class ChainParams:
    name: str
    spacing: int  # target seconds between blocks
    rule: str  # "asert" or "windowed"
    genesis_bits: int
    pow_limit_bits: int
    genesis_time: int
    window: int = 2016  # windowed rule: blocks per retarget
    off_by_one: bool = True  # windowed rule: Bitcoin's window of window-1 intervals
    halflife: int = 172_800  # asert rule: seconds ahead of schedule that double the difficulty
    max_future: int = 2 * 60 * 60  # how far ahead of the clock a block time may be
    message: str = ""

    def __post_init__(self) -> None:
        # Stored parameters come back from a file a user can edit: every field must have its
        # exact type (no float spacing, no list name), or later arithmetic fails far from here.
        for f in fields(self):
            value = getattr(self, f.name)
            want = {"int": int, "bool": bool, "str": str}[f.type]
            if type(value) is not want:
                raise InvalidInput(f"parameter {f.name} must be {f.type}, got {value!r:.40}")
        if self.rule not in RULES:
            raise InvalidInput(f"unknown retarget rule {self.rule!r} (choose from {', '.join(RULES)})")
        if self.spacing <= 0 or self.window <= 1 or self.halflife <= 0:
            raise InvalidInput("spacing and halflife must be positive and window at least 2")
        limit = bits_to_target(self.pow_limit_bits)
        bits_to_target(self.genesis_bits, limit)

    @property
    def pow_limit(self) -> int:
        return bits_to_target(self.pow_limit_bits)

    @property
    def pow_algorithm(self) -> PowAlgorithm:
        """The proof-of-work hash blocks of this chain are judged by (sha256d for every chain
        today; a parameter for a second algorithm joins the committed ones when it exists)."""
        return SHA256D

    def retarget_rule(self) -> RetargetRule:
        if self.rule == "windowed":
            return WindowedRule(self.window, self.spacing, self.pow_limit, self.off_by_one)
        if self.rule == "asert-capped":
            return CappedAsertRule(self.spacing, self.halflife, self.pow_limit,
                                   self.genesis_time - self.spacing)
        return AsertRule(self.spacing, self.halflife, self.pow_limit, self.genesis_bits,
                         self.genesis_time - self.spacing)

    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON of every parameter."""
        return hashlib.sha256(self.to_json().encode()).digest()

    def genesis_txs(self, committed: bool = True) -> list[bytes]:
        """The genesis coinbase. `committed` (chain format 2 on): its script ends with the
        parameters' digest, so editing any stored parameter no longer matches genesis."""
        text = (self.message or f"{self.name} genesis").encode()
        if committed:
            text += b" params:" + self.digest()
        return [coinbase_template(0, text).build(0)]

    def genesis_header(self, committed: bool = True) -> BlockHeader:
        """Genesis is fixed by the parameters (like Bitcoin's, valid by definition, nonce 0)."""
        root = merkle_root([txid(t) for t in self.genesis_txs(committed)])
        return BlockHeader(1, b"\x00" * 32, root, self.genesis_time, self.genesis_bits, 0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ChainParams:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise InvalidInput(f"parameters must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Start around 2^26 expected hashes (about a second on one modern CPU core with the numba
# backend), then let ASERT pull the spacing to a few seconds; a halflife of four spacings makes
# the adjustment visible within a minute of mining. The local presets use the capped ASERT: a
# local chain is mined on and off, and anchored ASERT would count every pause as blocks behind
# schedule and make the next hundreds of blocks trivial.
LOCAL_START_BITS = target_to_bits(1 << 230)
# Regtest's limit: the easiest target Bitcoin Core accepts anywhere.
REGTEST_BITS = 0x207FFFFF


_PRESETS: dict[str, dict] = {
    "local": {"spacing": 3, "rule": "asert-capped", "halflife": 12,
              "genesis_bits": LOCAL_START_BITS, "pow_limit_bits": REGTEST_BITS},
    "local-windowed": {"spacing": 3, "rule": "windowed", "window": 10, "off_by_one": False,
                       "genesis_bits": LOCAL_START_BITS, "pow_limit_bits": REGTEST_BITS},
    "regtest": {"spacing": 1, "rule": "asert", "halflife": 3600,
                "genesis_bits": REGTEST_BITS, "pow_limit_bits": REGTEST_BITS},
    "mainnet": {"spacing": 600, "rule": "windowed", "window": 2016, "off_by_one": True,
                "genesis_bits": 0x1D00FFFF, "pow_limit_bits": 0x1D00FFFF},
}
PRESETS = tuple(_PRESETS)


def preset(name: str, genesis_time: int) -> ChainParams:
    """The named preset with the given genesis time."""
    if name not in _PRESETS:
        raise InvalidInput(f"unknown chain preset {name!r} (choose from {', '.join(PRESETS)})")
    return ChainParams(name=name, genesis_time=genesis_time, **_PRESETS[name])
