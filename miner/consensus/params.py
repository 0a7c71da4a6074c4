"""Chain parameters and the presets `miner` ships with.

Parameters are fixed when a chain is created and stored in it as JSON, so a chain file always
validates under the rules it was mined with.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields, replace

from miner.consensus.pow import PowAlgorithm, algorithm
from miner.consensus.retarget import (
    AsertRule,
    CappedAsertRule,
    FixedRule,
    RetargetRule,
    WindowedRule,
)
from miner.errors import InvalidInput
from miner.primitives.coinbase import coinbase_template
from miner.primitives.compact import bits_to_target, target_to_bits
from miner.primitives.header import BlockHeader
from miner.primitives.merkle import merkle_root
from miner.primitives.transaction import txid

RULES = ("asert", "asert-capped", "windowed", "fixed")

# Fields added after chain files were first written: left out of the stored JSON (and so of the
# digest that genesis commits to) while they hold their defaults, so every earlier file matches.
_LATER_FIELDS: dict[str, object] = {"genesis_coinbase": "", "genesis_nonce": 0, "magic": "", "pow": "sha256d"}


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
    # A chain that must equal another program's (Bitcoin Core's regtest): its genesis coinbase
    # as hex and its genesis nonce, used as they are instead of a genesis committing to these
    # parameters, and its peer-to-peer magic as hex (empty: derived from genesis, `magic_bytes`).
    genesis_coinbase: str = ""
    genesis_nonce: int = 0
    magic: str = ""
    # The proof-of-work hash blocks are judged by (`consensus.pow`): sha256d, or scrypt as
    # Litecoin has it. Block ids stay sha256d either way.
    pow: str = "sha256d"

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
        try:
            bytes.fromhex(self.genesis_coinbase)
            magic = bytes.fromhex(self.magic)
        except ValueError:
            raise InvalidInput("genesis_coinbase and magic must be hex") from None
        algorithm(self.pow)  # InvalidInput naming the choices
        if len(magic) not in (0, 4) or not 0 <= self.genesis_nonce < 1 << 32:
            raise InvalidInput("magic must be 4 bytes and genesis_nonce a 32-bit number")

    @property
    def fixed_genesis(self) -> bool:
        """Genesis is another program's, given whole (it commits to nothing of ours)."""
        return bool(self.genesis_coinbase)

    @property
    def pow_limit(self) -> int:
        return bits_to_target(self.pow_limit_bits)

    @property
    def pow_algorithm(self) -> PowAlgorithm:
        """The proof-of-work hash blocks of this chain are judged by."""
        return algorithm(self.pow)

    def retarget_rule(self) -> RetargetRule:
        if self.rule == "windowed":
            return WindowedRule(self.window, self.spacing, self.pow_limit, self.off_by_one)
        if self.rule == "fixed":
            return FixedRule(self.genesis_bits)
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
        parameters' digest, so editing any stored parameter no longer matches genesis. A fixed
        genesis (`genesis_coinbase`) is used as given."""
        if self.fixed_genesis:
            return [bytes.fromhex(self.genesis_coinbase)]
        text = (self.message or f"{self.name} genesis").encode()
        if committed:
            text += b" params:" + self.digest()
        return [coinbase_template(0, text).build(0)]

    def genesis_header(self, committed: bool = True) -> BlockHeader:
        """Genesis is fixed by the parameters (like Bitcoin's, valid by definition, nonce 0)."""
        root = merkle_root([txid(t) for t in self.genesis_txs(committed)])
        return BlockHeader(1, b"\x00" * 32, root, self.genesis_time, self.genesis_bits, self.genesis_nonce)

    def magic_bytes(self, genesis_hash: bytes) -> bytes:
        """The 4 bytes that open every peer-to-peer message of this chain: the preset's own
        (Core's regtest), else derived from genesis, so nodes of different chains never mix."""
        if self.magic:
            return bytes.fromhex(self.magic)
        return hashlib.sha256(b"pow-miner network " + genesis_hash).digest()[:4]

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items()
                if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ChainParams:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise InvalidInput(f"parameters must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        params = cls(**{k: v for k, v in data.items() if k in known})
        params.check_fixed_genesis()
        return params

    def check_fixed_genesis(self) -> None:
        """Genesis commits to every parameter of ours (`genesis_txs`), except a fixed genesis:
        Core's regtest genesis commits to none, so its spacing, retarget rule, halflife, name or
        max_future could be edited in the file and still match it. Such a chain's parameters are
        committed by the preset whose genesis it is: they must be that preset's, field for field.
        (A digest stored beside them would be rewritten by whoever rewrites them; the preset is
        out of the file's reach.) InvalidInput naming the fields that differ."""
        if not self.fixed_genesis:
            return
        owner = next((name for name, values in _PRESETS.items()
                      if values.get("genesis_coinbase") == self.genesis_coinbase), None)
        if owner is None:
            raise InvalidInput("a fixed genesis that no preset has")
        expected = json.loads(preset(owner, self.genesis_time).to_json())
        stored = json.loads(self.to_json())
        differ = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
        if differ:
            raise InvalidInput(f"the {owner} genesis commits to that preset's parameters, and "
                               f"{', '.join(differ)} differ from it")


# A new `local` chain starts at 2^17 expected hashes a block (bits 1f008000): under half a second
# for the hashlib stand-in that mines while the CPU kernel compiles (about 280 kH/s on one core),
# so the first block comes within seconds on empty caches on any machine. The capped ASERT then
# raises the difficulty block by block, by at most 2^(3/12) (solve time 0) a block, to wherever
# the machine's rate puts a 3 s spacing: 2^26 (about 22 MH/s, a CPU kernel) after about 40
# blocks, each of them a fraction of a second. A halflife of four spacings makes the adjustment
# visible within a minute. The local presets use the capped ASERT: a local chain is mined on and
# off, and anchored ASERT would count every pause as blocks behind schedule and make the next
# hundreds of blocks trivial. A chain stores its own start (its genesis bits), so chains made
# with the earlier 2^26 start keep it.
LOCAL_START_BITS = target_to_bits(1 << 239)
# The windowed preset retargets only every 10 blocks, by at most 4x a window: it could not climb
# from 2^17 in reasonable time, so it starts where a CPU kernel is near its spacing, 2^26 hashes
# (about a second on one modern core with the numba backend).
WINDOWED_START_BITS = target_to_bits(1 << 230)
# Regtest's limit: the easiest target Bitcoin Core accepts anywhere.
REGTEST_BITS = 0x207FFFFF
# Bitcoin's genesis coinbase ("The Times 03/Jan/2009 Chancellor on brink of second bailout for
# banks", 50 BTC to Satoshi's key), shared by mainnet, testnet and regtest; the tests check its
# txid against the published merkle root 4a5e1e4b...a33b.
BITCOIN_GENESIS_COINBASE = (
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d"
    "0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66"
    "207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe55"
    "48271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba"
    "0b8d578a4c702b6bf11d5fac00000000")


_PRESETS: dict[str, dict] = {
    "local": {"spacing": 3, "rule": "asert-capped", "halflife": 12,
              "genesis_bits": LOCAL_START_BITS, "pow_limit_bits": REGTEST_BITS},
    # scrypt as Litecoin has it, about 2^15 hashes a block at first (about a second on one core
    # with the numba scrypt kernel, 24 kH/s), then ASERT pulls the spacing to 3 s as for `local`.
    "local-scrypt": {"spacing": 3, "rule": "asert-capped", "halflife": 12, "pow": "scrypt",
                     "genesis_bits": target_to_bits(1 << 241), "pow_limit_bits": REGTEST_BITS},
    "local-windowed": {"spacing": 3, "rule": "windowed", "window": 10, "off_by_one": False,
                       "genesis_bits": WINDOWED_START_BITS, "pow_limit_bits": REGTEST_BITS},
    "regtest": {"spacing": 1, "rule": "asert", "halflife": 3600,
                "genesis_bits": REGTEST_BITS, "pow_limit_bits": REGTEST_BITS},
    # Bitcoin Core's regtest (src/kernel/chainparams.cpp, CRegTestParams): its genesis block
    # (Bitcoin's genesis coinbase, time 1296688602, nonce 2, bits 0x207fffff, hash 0f9188f1...2206),
    # no retargeting, its magic; halvings every 150 blocks as for every non-mainnet chain here. A
    # `miner node` on it and a `bitcoind -regtest` are peers on one chain.
    "regtest-core": {"spacing": 600, "rule": "fixed", "genesis_bits": REGTEST_BITS,
                     "pow_limit_bits": REGTEST_BITS, "genesis_time": 1_296_688_602, "genesis_nonce": 2,
                     "genesis_coinbase": BITCOIN_GENESIS_COINBASE, "magic": "fabfb5da"},
    "mainnet": {"spacing": 600, "rule": "windowed", "window": 2016, "off_by_one": True,
                "genesis_bits": 0x1D00FFFF, "pow_limit_bits": 0x1D00FFFF},
}
PRESETS = tuple(_PRESETS)


def preset(name: str, genesis_time: int) -> ChainParams:
    """The named preset with the given genesis time (a preset with a fixed genesis keeps its own)."""
    if name not in _PRESETS:
        raise InvalidInput(f"unknown chain preset {name!r} (choose from {', '.join(PRESETS)})")
    return ChainParams(name=name, **{"genesis_time": genesis_time, **_PRESETS[name]})


def check_same_preset(params: ChainParams, name: str, where: str | os.PathLike) -> None:
    """A preset asked for by name (`--preset`) must be the one the chain at `where` was made
    with (`params`): a preset only makes a new chain, and one ignored on an existing chain mined
    SHA-256d where scrypt (`local-scrypt`) was asked for, without a word."""
    if params.name != name:
        raise InvalidInput(f"--preset {name}: {where} is a {params.name!r} chain; leave out --preset "
                           f"to use it, or give --chain a new file for a {name} chain")


def with_genesis_time(params: ChainParams, genesis_time: int) -> ChainParams:
    """`params` for a new chain created now; a fixed genesis keeps its own time."""
    return params if params.fixed_genesis else replace(params, genesis_time=genesis_time)
