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
