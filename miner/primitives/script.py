"""Bitcoin scripts read as Core shows them: the operations, their assembly text, and what kind of
output a script is.

No script is run here (the chain keeps no coin set and checks no script); this is what
`getblock HASH 2` shows of each input and output, with Core's words: an assembly line as
Core's `ScriptToAsmStr` writes it (pushes of up to 4 bytes as the number they encode, longer
ones as hex, a signature's sighash byte as `[ALL]` in an input's script, operations by name,
`[error]` where a push runs past the end), and an output's type as Core's `Solver` names it.
"""

from __future__ import annotations

from collections.abc import Iterator

OP_0, OP_PUSHDATA1, OP_PUSHDATA2, OP_PUSHDATA4, OP_1NEGATE = 0x00, 0x4C, 0x4D, 0x4E, 0x4F
OP_1, OP_16, OP_RETURN, OP_EQUAL, OP_EQUALVERIFY = 0x51, 0x60, 0x6A, 0x87, 0x88
OP_DUP, OP_HASH160, OP_CHECKSIG, OP_CHECKMULTISIG = 0x76, 0xA9, 0xAC, 0xAE
MAX_SCRIPT_SIZE = 10_000

_NAMED = (
    "NOP VER IF NOTIF VERIF VERNOTIF ELSE ENDIF VERIFY RETURN TOALTSTACK FROMALTSTACK 2DROP 2DUP 3DUP "
    "2OVER 2ROT 2SWAP IFDUP DEPTH DROP DUP NIP OVER PICK ROLL ROT SWAP TUCK CAT SUBSTR LEFT RIGHT SIZE "
    "INVERT AND OR XOR EQUAL EQUALVERIFY RESERVED1 RESERVED2 1ADD 1SUB 2MUL 2DIV NEGATE ABS NOT "
    "0NOTEQUAL ADD SUB MUL DIV MOD LSHIFT RSHIFT BOOLAND BOOLOR NUMEQUAL NUMEQUALVERIFY NUMNOTEQUAL "
    "LESSTHAN GREATERTHAN LESSTHANOREQUAL GREATERTHANOREQUAL MIN MAX WITHIN RIPEMD160 SHA1 SHA256 "
    "HASH160 HASH256 CODESEPARATOR CHECKSIG CHECKSIGVERIFY CHECKMULTISIG CHECKMULTISIGVERIFY NOP1 "
    "CHECKLOCKTIMEVERIFY CHECKSEQUENCEVERIFY NOP4 NOP5 NOP6 NOP7 NOP8 NOP9 NOP10 CHECKSIGADD").split()
# Opcode -> the name Core's GetOpName gives it (OP_NOP is 0x61, and the names run on to 0xba).
OPCODE_NAMES = {
    OP_0: "0", OP_PUSHDATA1: "OP_PUSHDATA1", OP_PUSHDATA2: "OP_PUSHDATA2", OP_PUSHDATA4: "OP_PUSHDATA4",
    OP_1NEGATE: "-1", 0x50: "OP_RESERVED", 0xFF: "OP_INVALIDOPCODE",
    **{OP_1 + i: str(i + 1) for i in range(16)},
    **{0x61 + i: f"OP_{name}" for i, name in enumerate(_NAMED)},
}
SIGHASH_NAMES = {0x01: "ALL", 0x02: "NONE", 0x03: "SINGLE", 0x81: "ALL|ANYONECANPAY",
                 0x82: "NONE|ANYONECANPAY", 0x83: "SINGLE|ANYONECANPAY"}


class ScriptError(ValueError):
    """A push that runs past the end of the script."""


def operations(script: bytes) -> Iterator[tuple[int, bytes | None]]:
    """(opcode, pushed bytes or None) for each operation; ScriptError where a push is cut short."""
    pos = 0
    while pos < len(script):
        op = script[pos]
        pos += 1
        if op > OP_PUSHDATA4:
            yield op, None
            continue
        if op < OP_PUSHDATA1:
            size = op
        else:
            width = {OP_PUSHDATA1: 1, OP_PUSHDATA2: 2, OP_PUSHDATA4: 4}[op]
            if pos + width > len(script):
                raise ScriptError("push length past the end")
            size = int.from_bytes(script[pos:pos + width], "little")
            pos += width
        if pos + size > len(script):
            raise ScriptError("push past the end")
        yield op, script[pos:pos + size]
        pos += size


def script_number(data: bytes) -> int:
    """A push of up to 4 bytes as the number it encodes (little-endian, sign in the top bit)."""
    if not data:
        return 0
    value = int.from_bytes(data, "little")
    top = 0x80 << (8 * (len(data) - 1))
    return -(value & ~top) if value & top else value


def is_der_signature(sig: bytes) -> bool:
    """BIP 66's strict DER with a sighash byte after it: 0x30, the length, then R and S as
    positive integers with no needless leading zero."""
    if not 9 <= len(sig) <= 73 or sig[0] != 0x30 or sig[1] != len(sig) - 3:
        return False
    len_r = sig[3]
    if 5 + len_r >= len(sig):
        return False
    len_s = sig[5 + len_r]
    if len_r + len_s + 7 != len(sig) or sig[2] != 0x02 or sig[4 + len_r] != 0x02:
        return False
    for start, size in ((4, len_r), (6 + len_r, len_s)):
        if size == 0 or sig[start] & 0x80:
            return False
        if size > 1 and sig[start] == 0 and not sig[start + 1] & 0x80:
            return False
    return True


def asm(script: bytes, signatures: bool = False) -> str:
    """The script's assembly line as Core writes it; `signatures` (an input's script): a push
    that is a strict DER signature with a known sighash type shows that type as `[ALL]`."""
    unspendable = (script[:1] == bytes([OP_RETURN])) or len(script) > MAX_SCRIPT_SIZE
    words: list[str] = []
    try:
        for op, data in operations(script):
            if data is None:
                words.append(OPCODE_NAMES.get(op, "OP_UNKNOWN"))
            elif len(data) <= 4:
                words.append(str(script_number(data)))
            elif signatures and not unspendable and is_der_signature(data) and data[-1] in SIGHASH_NAMES:
                words.append(data[:-1].hex() + f"[{SIGHASH_NAMES[data[-1]]}]")
            else:
                words.append(data.hex())
    except ScriptError:
        words.append("[error]")
    return " ".join(words)


def _is_pubkey(data: bytes | None) -> bool:
    """The size and first byte of a public key (Core's CPubKey::ValidSize)."""
    return data is not None and ((len(data) == 33 and data[0] in (2, 3)) or
                                 (len(data) == 65 and data[0] in (4, 6, 7)))


def witness_program(script: bytes) -> tuple[int, bytes] | None:
    """(version, program) of a segwit output: a version opcode and one push of 2 to 40 bytes."""
    if not 4 <= len(script) <= 42 or not (script[0] == OP_0 or OP_1 <= script[0] <= OP_16):
        return None
    if script[1] + 2 != len(script):
        return None
    return (0 if script[0] == OP_0 else script[0] - OP_1 + 1), script[2:]


def output_type(script: bytes) -> tuple[str, list[bytes]]:
    """Core's name for the kind of output (`Solver`) and what it holds: the hash, the witness
    program, or the public keys (a multisig's prefixed by m and n as one byte each)."""
    if script == bytes([OP_1, 0x02, 0x4E, 0x73]):
        return "anchor", []  # pay-to-anchor (Core 28)
    if len(script) == 23 and script[0] == OP_HASH160 and script[1] == 20 and script[22] == OP_EQUAL:
        return "scripthash", [script[2:22]]
    program = witness_program(script)
    if program is not None:
        return _witness_type(*program)
    try:
        ops = list(operations(script))
    except ScriptError:
        return "nonstandard", []
    return _legacy_type(script, ops)


_WITNESS_TYPES = {(0, 20): "witness_v0_keyhash", (0, 32): "witness_v0_scripthash", (1, 32): "witness_v1_taproot"}


def _witness_type(version: int, data: bytes) -> tuple[str, list[bytes]]:
    """A segwit output by version and program length; an unknown version is Core's
    `witness_unknown`, an unknown length of version 0 is nonstandard."""
    name = _WITNESS_TYPES.get((version, len(data)))
    if name is not None:
        return name, [data]
    return ("nonstandard", []) if version == 0 else ("witness_unknown", [bytes([version]), data])


def _legacy_type(script: bytes, ops: list) -> tuple[str, list[bytes]]:
    """The templates read from the script's operations: null data, pay-to-pubkey(-hash), bare multisig."""
    if script[:1] == bytes([OP_RETURN]) and all(op <= OP_16 for op, _ in ops[1:]):
        return "nulldata", []
    if len(ops) == 2 and _is_pubkey(ops[0][1]) and ops[1] == (OP_CHECKSIG, None):
        return "pubkey", [ops[0][1]]  # type: ignore[list-item]
    if len(script) == 25 and script[:3] == bytes([OP_DUP, OP_HASH160, 20]) and \
            script[23:] == bytes([OP_EQUALVERIFY, OP_CHECKSIG]):
        return "pubkeyhash", [script[3:23]]
    multisig = _bare_multisig(ops)
    return ("multisig", multisig) if multisig is not None else ("nonstandard", [])


def _bare_multisig(ops: list) -> list[bytes] | None:
    """m, the n public keys and n (m and n one byte each) of `m <keys> n OP_CHECKMULTISIG`."""
    if len(ops) >= 4 and ops[-1] == (OP_CHECKMULTISIG, None) and OP_1 <= ops[0][0] <= OP_16 and \
            OP_1 <= ops[-2][0] <= OP_16:
        m, n, keys = ops[0][0] - OP_1 + 1, ops[-2][0] - OP_1 + 1, [data for _, data in ops[1:-2]]
        if len(keys) == n and m <= n and all(_is_pubkey(k) for k in keys):
            return [bytes([m]), *keys, bytes([n])]
    return None
