"""Static performance report for the CUDA kernel: SASS instructions per nonce, by pipe.

    python -m miner.bench.sass [--arch sm_90] [--json]

Compiles kernels/sha256d.cu with nvcc, disassembles it with cuobjdump (the nvidia-cuda-cuobjdump
and nvidia-cuda-nvdisasm wheels, `pip install -e '.[sass]'`), finds the hot loop (the largest
backward branch), leaves out the hit path (the region a forward branch inside the loop skips),
and counts what remains per pipe. The prediction uses a simple throughput model: an SM retires
64 integer-ALU lanes per clock (two warp instructions), 64 integer multiply-add lanes on the FMA
pipe (two warp instructions; IMAD.HI and IMAD.WIDE counted twice, taken to be half rate as
64-bit-product forms, not yet measured here), and issues one warp instruction per clock per
quarter (four per clock); a nonce costs whichever bound is tightest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from miner.kernels.cuda_job import SOURCE

# (name, SMs, boost clock in GHz): public spec-sheet figures.
DEVICES = [
    ("H100 SXM", 132, 1.98),
    ("H100 PCIe", 114, 1.755),
    ("A100", 108, 1.41),
    ("RTX 4090", 128, 2.52),
]
ALU_WARP_INSTR_PER_CLK = 2  # 64 integer lanes per SM per clock / 32 threads per warp
FMA_WARP_INSTR_PER_CLK = 2  # 64 IMAD lanes per SM per clock
ISSUE_WARP_INSTR_PER_CLK = 4  # one warp instruction per clock in each of four SM quarters
DOUBLE_SLOT_FMA = ("IMAD.HI", "IMAD.WIDE")  # taken to take two FMA-pipe slots each

# Opcodes that run on the FMA pipe (IMAD and its IADD/MOV/SHL forms, VIADD); control-flow ones
# are counted apart; everything else integer runs on the ALU pipe.
FMA_PREFIXES = ("IMAD", "VIADD", "FFMA", "FMUL", "FADD")
CONTROL = {"BRA", "EXIT", "CALL", "RET", "BSSY", "BSYNC", "NOP", "WARPSYNC", "BAR", "YIELD"}

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)([^;]*);")


@dataclass
class Instr:
    addr: int
    pred: str
    op: str
    args: str


@dataclass
class LoopReport:
    arch: str
    registers: int
    stack_bytes: int
    spill_bytes: int
    loop_instructions: int
    hit_path_instructions: int
    per_nonce: int
    by_opcode: dict = field(default_factory=dict)
    by_pipe: dict = field(default_factory=dict)

    @property
    def fma_slots(self) -> int:
        return sum(n * (2 if op.startswith(DOUBLE_SLOT_FMA) else 1)
                   for op, n in self.by_opcode.items() if pipe_of(op) == "fma")

    def predict(self, sms: int, ghz: float) -> dict:
        """Hash rate bounds for a device with `sms` SMs at `ghz`: whichever of the integer ALU
        pipe, the FMA pipe and instruction issue saturates first sets the prediction."""
        per_sm = 32 * ghz * 1e9

        def bound(clocks: float) -> float:
            return sms * per_sm / clocks / 1e9 if clocks else float("inf")

        alu_clk = self.by_pipe.get("alu", 0) / ALU_WARP_INSTR_PER_CLK
        fma_clk = self.fma_slots / FMA_WARP_INSTR_PER_CLK
        issue_clk = self.per_nonce / ISSUE_WARP_INSTR_PER_CLK
        return {
            "sms": sms, "ghz": ghz,
            "predicted_ghs": bound(max(alu_clk, fma_clk, issue_clk)),
            "issue_bound_ghs": bound(issue_clk),
            "alu_bound_ghs": bound(alu_clk),
            "fma_bound_ghs": bound(fma_clk),
        }

    def predictions(self) -> list[dict]:
        return [{"device": name, **self.predict(sms, ghz)} for name, sms, ghz in DEVICES]


def find_tool(name: str) -> str:
    """A CUDA tool from PATH or from the nvidia-* wheels' bin folders."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import nvidia  # namespace package of the nvidia-cuda-* wheels
        for base in nvidia.__path__:
            for candidate in Path(base).glob(f"*/bin/{name}"):
                return str(candidate)
    except ImportError:
        pass
    raise FileNotFoundError(f"{name} not found: install the CUDA toolkit or pip install -e '.[sass]'")


def compile_cubin(arch: str, out_dir: Path, source: Path = SOURCE) -> tuple[Path, str]:
    """nvcc -cubin for `arch`; returns the cubin and ptxas's verbose report."""
    cubin = out_dir / f"sha256d_{arch}.cubin"
    proc = subprocess.run([find_tool("nvcc"), "-cubin", f"-arch={arch}", "-O3", "-Xptxas", "-v",
                           "-o", str(cubin), str(source)], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed for {arch}: {proc.stderr.strip()}")
    return cubin, proc.stderr


def ptxas_usage(report: str, kernel: str = "sha256d_search") -> dict:
    """Registers, stack frame and spill bytes of `kernel` from `-Xptxas -v` output."""
    lines = report.splitlines()
    for i, line in enumerate(lines):
        if "Compiling entry function" in line and f"'{kernel}'" in line:
            block = "\n".join(lines[i:i + 6])
            regs = int(re.search(r"Used (\d+) registers", block).group(1))
            frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                              block)
            return {"registers": regs, "stack_bytes": int(frame.group(1)),
                    "spill_bytes": int(frame.group(2)) + int(frame.group(3))}
    raise ValueError(f"no ptxas report for {kernel}")


def disassemble(cubin: Path) -> str:
    tool = find_tool("cuobjdump")
    env = dict(os.environ)
    env["PATH"] = str(Path(find_tool("nvdisasm")).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run([tool, "-sass", str(cubin)], capture_output=True, text=True, check=True,
                          env=env).stdout


def parse_function(sass: str, name: str = "sha256d_search") -> list[Instr]:
    instrs: list[Instr] = []
    inside = False
    for line in sass.splitlines():
        if "Function :" in line:
            inside = line.split("Function :")[1].strip() == name
            continue
        if not inside:
            continue
        m = _LINE.search(line)
        if m:
            instrs.append(Instr(int(m.group(1), 16), (m.group(2) or "").strip(), m.group(3), m.group(4)))
    return instrs


def _target(instr: Instr) -> int | None:
    m = re.search(r"0x([0-9a-f]+)", instr.args)
    return int(m.group(1), 16) if m else None


def _branches(instrs: list[Instr]) -> list[tuple[Instr, int]]:
    """Each branch with the address it jumps to."""
    return [(ins, tgt) for ins in instrs if ins.op.startswith("BRA") and (tgt := _target(ins)) is not None]


def hot_loop(instrs: list[Instr]) -> tuple[list[Instr], list[Instr]]:
    """(loop body without the hit path, hit path) of the largest backward-branch loop."""
    loops = [(tgt, ins.addr) for ins, tgt in _branches(instrs) if tgt < ins.addr]
    if not loops:
        raise ValueError("no loop found in the kernel")
    start, end = max(loops, key=lambda loop: loop[1] - loop[0])  # the first of the largest
    body = [i for i in instrs if start <= i.addr <= end]
    skipped: set[int] = set()
    for ins, tgt in _branches(body):  # a predicated forward branch skips the hit path
        if ins.pred and ins.addr < tgt <= end:
            skipped.update(i.addr for i in body if ins.addr < i.addr < tgt)
    hot = [i for i in body if i.addr not in skipped]
    hit = [i for i in body if i.addr in skipped]
    return hot, hit


def pipe_of(op: str) -> str:
    base = op.split(".")[0]
    if base in CONTROL:
        return "control"
    if op.startswith(FMA_PREFIXES):
        return "fma"
    return "alu"


def analyse(arch: str = "sm_90", source: Path = SOURCE) -> LoopReport:
    with tempfile.TemporaryDirectory() as tmp:
        cubin, ptxas = compile_cubin(arch, Path(tmp), source)
        usage = ptxas_usage(ptxas)
        instrs = parse_function(disassemble(cubin))
    hot, hit = hot_loop(instrs)
    ops = Counter(i.op for i in hot)
    pipes = Counter()
    for op, n in ops.items():
        pipes[pipe_of(op)] += n
    return LoopReport(arch, usage["registers"], usage["stack_bytes"], usage["spill_bytes"],
                      len(hot) + len(hit), len(hit), len(hot), dict(ops.most_common()), dict(pipes))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m miner.bench.sass", description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        report = analyse(args.arch)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"bench.sass: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report.__dict__, "predictions": report.predictions()}, indent=2))
        return 0
    print(f"{report.arch}: {report.registers} registers, stack frame {report.stack_bytes} B, "
          f"spills {report.spill_bytes} B")
    print(f"hot loop: {report.per_nonce} instructions per nonce "
          f"(hit path of {report.hit_path_instructions} excluded); by pipe: "
          + ", ".join(f"{k} {v}" for k, v in sorted(report.by_pipe.items())))
    print("top opcodes: " + ", ".join(f"{k} {v}" for k, v in list(report.by_opcode.items())[:10]))
    print(f"{'device':<10} {'SMs':>4} {'GHz':>6} {'predicted':>10} {'ALU bound':>10} {'FMA bound':>10}"
          f" {'issue bound':>12}")
    for row in report.predictions():
        print(f"{row['device']:<10} {row['sms']:>4} {row['ghz']:>6.3f} {row['predicted_ghs']:>8.2f} GH/s"
              f" {row['alu_bound_ghs']:>8.2f} GH/s {row['fma_bound_ghs']:>8.2f} GH/s"
              f" {row['issue_bound_ghs']:>10.2f} GH/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
