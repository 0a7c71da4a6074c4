"""From a block template (BIP 22/23, with BIP 141's witness commitment) to a `Job`: the one
builder used by `miner mine --url`, the node's `generatetoaddress`, and the coming Stratum server.

The coinbase is built here: the BIP 34 height, an extranonce the coordinator rolls (after an
extranonce1 a pool fixes per connection, if any), a short message, the payout, and the
template's `default_witness_commitment` output when there is one (then the submitted coinbase
carries the witness reserved value). The merkle branch over the template's transactions is
computed once per template, so rolling the extranonce costs two hashes a level.
"""

from __future__ import annotations

import time
from typing import Any

from miner.consensus.checks import MAX_MONEY
from miner.errors import InvalidInput, MinerError
from miner.mining.work import Job, Solution
from miner.primitives.coinbase import EXTRANONCE_SIZE, coinbase_template
from miner.primitives.compact import bits_to_target
from miner.primitives.hashes import display_hex, parse_display_hex
from miner.primitives.merkle import merkle_branch
from miner.primitives.serialize import DecodeError
from miner.primitives.transaction import Transaction

MAX_HEIGHT = (1 << 31) - 1  # a height BIP 34 can write (CScriptNum, 4 bytes)


class TemplateError(MinerError):
    """A template this miner cannot build a block from: named field and why."""


def _field(template: dict, name: str, kind: type | tuple) -> Any:
    value = template.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TemplateError(f"getblocktemplate: field {name!r} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _ranged(template: dict, name: str, low: int, high: int) -> int:
    """An integer field within what a block can carry (a hostile node's -1 or 2^63 is named
    here, not met later as an overflow deep in the coinbase or the header)."""
    value = _field(template, name, int)
    if not low <= value <= high:
        raise TemplateError(f"getblocktemplate: field {name!r} is {value!r:.30}, outside {low}..{high}")
    return value


def _transactions(template: dict) -> list[Transaction]:
    txs = []
    for i, entry in enumerate(_field(template, "transactions", list)):
        try:
            tx = Transaction.parse(bytes.fromhex(entry["data"]))
        except (TypeError, KeyError, ValueError, DecodeError) as exc:
            raise TemplateError(f"getblocktemplate: transaction {i} does not parse ({exc})") from None
        if "txid" in entry and entry["txid"] != display_hex(tx.txid):
            raise TemplateError(f"getblocktemplate: transaction {i}'s txid does not match its data")
        txs.append(tx)
    return txs


def job_from_template(template: dict, payout_script: bytes, message: bytes = b"pow-miner",
                      extranonce_size: int = EXTRANONCE_SIZE, extranonce1: bytes = b"") -> Job:
    """A Job for a getblocktemplate result; raises TemplateError naming a bad field."""
    if not isinstance(template, dict):
        raise TemplateError("getblocktemplate did not return an object")
    height = _ranged(template, "height", 1, MAX_HEIGHT)
    version = _ranged(template, "version", -(1 << 31), (1 << 32) - 1)
    try:
        prev = parse_display_hex(_field(template, "previousblockhash", str), "previousblockhash")
    except InvalidInput as exc:
        raise TemplateError(f"getblocktemplate: {exc}") from None
    value = _ranged(template, "coinbasevalue", 0, MAX_MONEY)
    curtime = _ranged(template, "curtime", 0, (1 << 32) - 1)
    try:
        bits = int(_field(template, "bits", str), 16)
        target = bits_to_target(bits)
    except (ValueError, InvalidInput) as exc:
        raise TemplateError(f"getblocktemplate: bad bits: {exc}") from None
    if "target" in template:
        try:
            stated = int(template["target"], 16)
        except (TypeError, ValueError):
            raise TemplateError("getblocktemplate: field 'target' is not hex") from None
        target = min(target, stated)  # never submit a block the node's own target refuses
    txs = _transactions(template)
    extra_outputs = []
    commitment = template.get("default_witness_commitment")
    if commitment:
        try:
            extra_outputs.append((0, bytes.fromhex(commitment)))
        except (TypeError, ValueError):
            raise TemplateError("getblocktemplate: default_witness_commitment is not hex") from None
    try:
        coinbase = coinbase_template(height, message, value, extranonce_size, payout_script, extra_outputs,
                                     extranonce1)
    except ValueError as exc:
        raise TemplateError(f"cannot build the coinbase: {exc}") from None
    branch = tuple(merkle_branch([bytes(32)] + [t.txid for t in txs]))
    longpollid = template.get("longpollid") if isinstance(template.get("longpollid"), str) else None
    return Job(job_id=f"{height}-{display_hex(prev)[:16]}-{int(time.time() * 1000) % 10**6}",
               height=height, version=version, prev_hash=prev, coinbase=coinbase, branch=branch,
               time=curtime, bits=bits, target=target, extra_txs=tuple(txs),
               witness=bool(commitment), longpoll_id=longpollid)


def block_hex(solution: Solution) -> str:
    """The solved block as submitblock takes it."""
    return solution.block().serialize().hex()
