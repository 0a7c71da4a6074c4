"""Payout addresses to output scripts, decoded by a well-kept library (embit: base58check,
bech32 and bech32m of BIP 173/350, so P2PKH, P2SH, P2WPKH, P2WSH and P2TR).

Any network's address is accepted (mainnet, testnet/signet, regtest): the node a miner mines does
not check where a coinbase pays, and the user may mine Core's regtest or this project's chain.
"""

from __future__ import annotations

from miner.errors import InvalidInput


def script_for_address(address: str) -> bytes:
    """The scriptPubKey an address stands for; InvalidInput naming the address if it is none."""
    from embit.script import address_to_scriptpubkey
    text = address.strip()
    try:
        return address_to_scriptpubkey(text).data
    except Exception:  # noqa: BLE001  (embit raises its own error types, and ValueError/KeyError for some)
        raise InvalidInput(f"not a Bitcoin address: {text[:100]!r}") from None


def parse_script_hex(text: str) -> bytes:
    """--payout-script: an output script as hex (at most 10,000 bytes, Core's script limit)."""
    try:
        script = bytes.fromhex(text.strip())
    except ValueError:
        raise InvalidInput(f"--payout-script is not hex: {text[:100]!r}") from None
    if not 0 < len(script) <= 10_000:
        raise InvalidInput("--payout-script must be 1 to 10,000 bytes")
    return script


def address_of(script: bytes, output_type: str, solutions: list[bytes], mainnet: bool) -> str | None:
    """The address an output script pays, as Core's `ExtractDestination` finds one (none for a
    bare public key, a multisig, data or a nonstandard script): base58check for key and script
    hashes, bech32 for witness version 0 and bech32m for the later ones, with mainnet's or
    regtest's prefixes."""
    from embit import base58, bech32
    if output_type in ("pubkeyhash", "scripthash"):
        prefix = {("pubkeyhash", True): 0x00, ("scripthash", True): 0x05,
                  ("pubkeyhash", False): 0x6F, ("scripthash", False): 0xC4}[output_type, mainnet]
        return base58.encode_check(bytes([prefix]) + solutions[0])
    hrp = "bc" if mainnet else "bcrt"
    if output_type in ("witness_v0_keyhash", "witness_v0_scripthash"):
        return bech32.encode(hrp, 0, solutions[0])
    if output_type == "witness_v1_taproot":
        return bech32.encode(hrp, 1, solutions[0])
    if output_type == "witness_unknown":
        return bech32.encode(hrp, solutions[0][0], solutions[1])
    if output_type == "anchor":
        return bech32.encode(hrp, 1, script[2:])
    return None
