"""Reading x86-64 assembly (AT&T, as numba's `inspect_asm` gives it) for the CPU kernels' static
model (`cpu_model`): functions, loops, and each instruction's execution-port classes.

An instruction that reads memory counts a load besides its operation, one that writes memory a
store; a plain move to or from memory is only that. A loop's passes per call are set by the work
the call must do (`dynamic_counts`), since the trip count is not in the code.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

_SHIFT = re.compile(r"^v?p(s[lr][la]?v?[dwq]|ro[lr]v?[dq]|sr[la]v?[dwq])$")
_SHUFFLE = re.compile(r"^v?(pshuf|palignr|punpck|perm|vperm|vinsert|vextract|pbroadcast|broadcast|shufp"
                      r"|pinsr|pextr|pack)")
_MOVE = re.compile(r"^v?(movdq[au](8|16|32|64)?|movap[sd]|movup[sd]|movd|movq)$")
_BRANCH = re.compile(r"^(j[a-z]+|ret[lq]?)$")
_NOT_WORK = re.compile(r"^(nop[wlq]?|vzeroupper|ud2|int3)$")


@dataclass
class Instr:
    op: str
    args: str

    @property
    def bits(self) -> int:
        return 512 if "%zmm" in self.args else 256 if "%ymm" in self.args else 128 if "%xmm" in self.args else 0

    @property
    def memory_operands(self) -> list[int]:
        """Operand positions (AT&T order: sources first, destination last) that are memory."""
        depth, out, pos = 0, set(), 0
        for ch in self.args:
            if ch == "(":
                depth += 1
                out.add(pos)
            elif ch == ")":
                depth -= 1
            elif ch == "," and depth == 0:
                pos += 1
        return sorted(out)

    @property
    def operand_count(self) -> int:
        depth, n = 0, 1 if self.args.strip() else 0
        for ch in self.args:
            depth += ch == "("
            depth -= ch == ")"
            n += ch == "," and depth == 0
        return n


def classify(ins: Instr) -> list[str]:
    """The port classes one instruction uses: its operation's, plus a load for a memory source
    and a store for a memory destination (a plain move to or from memory is only that)."""
    op = ins.op
    if _NOT_WORK.match(op) or op.startswith("."):
        return []
    wide = "_512" if ins.bits == 512 else ""
    whole = _whole_instruction_class(op)
    if whole is not None:
        return [whole]
    mem = ins.memory_operands
    writes = bool(mem) and mem[-1] == ins.operand_count - 1 and not op.startswith(("cmp", "test", "bt"))
    reads = bool(mem) and not (writes and len(mem) == 1 and _is_move(op))
    if _is_move(op) and mem:
        return ["store" + wide] if writes else ["load"]
    out = [_operation_class(ins, wide)]
    if reads:
        out.append("load")
    if writes:
        out.append("store" + wide)
    return out


def _whole_instruction_class(op: str) -> str | None:
    """Instructions counted as one class whatever their operands: an address computed (lea: no
    memory touched), gathers and scatters (their memory is their work), calls and branches."""
    if op.startswith("lea"):
        return "scalar_alu"
    for part, kind in (("gather", "gather"), ("scatter", "scatter")):
        if part in op:
            return kind
    if op.startswith("call"):
        return "call"
    if _BRANCH.match(op):
        return "branch"
    return None


def _operation_class(ins: Instr, wide: str) -> str:
    """The class of the operation itself, for an instruction whose memory operands are counted apart."""
    op = ins.op
    if op.startswith("sha256rnds2"):
        return "sha_rnds"
    if op.startswith("sha256msg"):
        return "sha_msg"
    if _SHIFT.match(op):
        return "vec_shift" + wide
    if _SHUFFLE.match(op):
        return "shuffle" + wide
    if _is_move(op):
        return ("vec_alu" + wide) if ins.bits else "scalar_alu"
    if op.startswith(("vp", "p", "kx", "kmov", "kand", "kor", "kshift", "vmov", "vxorp", "vandp", "vorp")) \
            and (ins.bits or op.startswith("k")):
        return "vec_alu" + wide
    if op.startswith(("shl", "shr", "sar", "rol", "ror", "rorx", "shlx", "shrx", "sarx")):
        return "scalar_shift"
    return "scalar_alu"


def _is_move(op: str) -> bool:
    return bool(_MOVE.match(op)) or op in ("movl", "movq", "movb", "movw", "movzbl", "movzwl", "movslq", "movabsq")


def split_functions(asm: str) -> dict[str, list[Instr]]:
    """Assembly text (AT&T, as `inspect_asm` gives it) as {function label: instructions}, with
    local labels kept as pseudo-instructions (op '.label', args the name) for the loop search."""
    functions: dict[str, list[Instr]] = {}
    current: list[Instr] | None = None
    for line in asm.splitlines():
        label = re.match(r"^([^\s#\"][^:\s]*):", line)
        if label:
            name = label.group(1)
            if name.startswith(".L"):
                if current is not None:
                    current.append(Instr(".label", name))
            else:
                current = functions.setdefault(name, [])
            continue
        m = re.match(r"^\s+([a-z][a-z0-9]*)\b\s*([^#]*)", line)
        if m and current is not None and not line.lstrip().startswith("."):
            current.append(Instr(m.group(1), m.group(2).strip()))
    return functions


def kernel_function(asm: str, name: str) -> list[Instr]:
    """The instructions of the numba function whose mangled name holds `name` (not its CPython
    wrapper)."""
    for label, instrs in split_functions(asm).items():
        if name in label and not label.startswith(("_ZN7cpython", "cfunc.")):
            return instrs
    raise ValueError(f"no function {name!r} in the assembly")


def largest_loop(instrs: list[Instr], vector: bool = False) -> tuple[int, int] | None:
    """(first, last) index of the largest backward-branch loop, or None; with `vector`, of the
    largest that holds vector instructions (not the scalar loop for the nonces left over)."""
    where = {ins.args: i for i, ins in enumerate(instrs) if ins.op == ".label"}
    best = None
    for i, ins in enumerate(instrs):
        if ins.op.startswith("j") and ins.args in where and where[ins.args] < i:
            span = (where[ins.args], i)
            if vector and not any(x.bits for x in instrs[span[0]:span[1] + 1]):
                continue
            if best is None or span[1] - span[0] > best[1] - best[0]:
                best = span
    return best


def count_classes(instrs: list[Instr]) -> Counter:
    out: Counter = Counter()
    for ins in instrs:
        out.update(classify(ins))
    return out


def lanes_of(ins: Instr) -> int:
    return max(ins.bits // 32, 1)


def work_units(instrs: list[Instr], unit: str) -> int:
    """How much of one kind of work these instructions do, in 32-bit lanes: packed adds, XORs, or
    words stored (a `vpternlogd` may hold an XOR, but these kernels' pad XORs are plain ones)."""
    total = 0
    for ins in instrs:
        if unit == "add" and ins.op in ("vpaddd", "paddd", "addl", "leal"):
            total += lanes_of(ins) if ins.bits else (1 if ins.op == "addl" else 0)
        elif unit == "xor" and ins.op in ("vpxord", "vpxor", "pxor", "xorl", "vpxorq", "vxorps"):
            total += lanes_of(ins)
        elif unit == "store" and "store" in "".join(classify(ins)):
            total += lanes_of(ins) if ins.bits else 1
    return total


def dynamic_counts(instrs: list[Instr], unit: str, expected: int) -> Counter:
    """Classes executed in one call of a function that must do `expected` lanes of `unit` work:
    the code outside its largest loop once, the loop as many times as the rest of the work needs."""
    loop = largest_loop(instrs)
    if loop is None:
        return count_classes(instrs)
    body = instrs[loop[0]:loop[1] + 1]
    outside = instrs[:loop[0]] + instrs[loop[1] + 1:]
    per_pass = work_units(body, unit)
    trips = max(1, round((expected - work_units(outside, unit)) / per_pass)) if per_pass else 1
    out = count_classes(outside)
    for k, v in count_classes(body).items():
        out[k] += v * trips
    return out


