"""A transaction as Core's `getblock HASH 2` shows it (its `TxToUniv`): the ids, sizes and
weight, every input (`coinbase`, or `txid`, `vout` and `scriptSig` with `asm` and `hex`; then
`txinwitness` when it has one, and `sequence`), every output (`value` in coins, `n`, and
`scriptPubKey` with `asm`, `desc`, `hex`, `address` where one exists and `type`), and the hex.

Core adds `fee` where it has the coins spent; this chain keeps no coin set (docs/guide/node.md, "What this
chain does not check"), so no fee is shown. Output descriptors are inferred as Core infers them
without a wallet: `addr(...)` for anything with an address, `pk(...)` and `multi(...)` for bare
keys, `rawtr(...)` for a taproot key, `raw(...)` for the rest, each with its BIP 380 checksum.
"""

from __future__ import annotations

from miner.primitives.address import address_of
from miner.primitives.hashes import display_hex
from miner.primitives.script import asm, output_type
from miner.primitives.transaction import Transaction

COIN = 100_000_000


def _descriptor(script: bytes, kind: str, solutions: list[bytes], address: str | None) -> str:
    from embit.descriptor.checksum import add_checksum
    if kind == "pubkey":
        text = f"pk({solutions[0].hex()})"
    elif kind == "multisig":
        text = f"multi({solutions[0][0]},{','.join(k.hex() for k in solutions[1:-1])})"
    elif kind == "witness_v1_taproot":
        text = f"rawtr({solutions[0].hex()})"
    elif address is not None:
        text = f"addr({address})"
    else:
        text = f"raw({script.hex()})"
    return add_checksum(text)


def script_pubkey_json(script: bytes, mainnet: bool) -> dict:
    kind, solutions = output_type(script)
    address = address_of(script, kind, solutions, mainnet)
    out = {"asm": asm(script), "desc": _descriptor(script, kind, solutions, address), "hex": script.hex()}
    if address is not None:
        out["address"] = address
    out["type"] = kind
    return out


def tx_json(tx: Transaction, mainnet: bool) -> dict:
    vin = []
    for i, txin in enumerate(tx.inputs):
        entry: dict = {}
        if tx.is_coinbase:
            entry["coinbase"] = txin.script_sig.hex()
        else:
            entry["txid"] = display_hex(txin.prev_hash)
            entry["vout"] = txin.prev_index
            entry["scriptSig"] = {"asm": asm(txin.script_sig, signatures=True), "hex": txin.script_sig.hex()}
        if tx.witnesses and tx.witnesses[i]:
            entry["txinwitness"] = [item.hex() for item in tx.witnesses[i]]
        entry["sequence"] = txin.sequence
        vin.append(entry)
    vout = [{"value": out.value / COIN, "n": n, "scriptPubKey": script_pubkey_json(out.script_pubkey, mainnet)}
            for n, out in enumerate(tx.outputs)]
    return {"txid": display_hex(tx.txid), "hash": display_hex(tx.wtxid), "version": tx.version & 0xFFFFFFFF,
            "size": len(tx.raw), "vsize": (tx.weight + 3) // 4, "weight": tx.weight, "locktime": tx.locktime,
            "vin": vin, "vout": vout, "hex": tx.raw.hex()}
