"""The static model of the CPU kernels' limits (`bench/cpu_model.py`, `cpu_asm.py`,
`cpu_ports.py`): its counting on a small assembly snippet whose counts are known, its port bound
on hand-made mixes, and `miner bench --static` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from miner.bench import cpu_asm, cpu_ports
from support import compile_lane

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """\
_ZN5miner7kernels4demo6kernelB2v1E:
\tmovl\t(%rdi), %eax
.LBB0_1:
\tvpaddd\t%zmm1, %zmm2, %zmm3
\tvprold\t$7, %zmm3, %zmm3
\tvpxord\t(%rsi), %zmm3, %zmm4
\tvmovdqu64\t%zmm4, (%rdx)
\tsha256rnds2\t%xmm0, %xmm2, %xmm1
\taddl\t$1, %ecx
\tleaq\t(%rax,%rcx,4), %r8
\txorl\t%eax, 8(%rdx)
\tcmpl\t%ecx, %r9d
\tjne\t.LBB0_1
\tretq
_ZN7cpython5miner7kernels4demo6kernelB2v1E:
\tvpaddd\t%zmm1, %zmm2, %zmm3
\tretq
"""


def test_the_snippet_is_counted_by_class_exactly():
    instrs = cpu_asm.kernel_function(SNIPPET, "kernel")  # the kernel, not its CPython wrapper
    first, last = cpu_asm.largest_loop(instrs)
    body = instrs[first:last + 1]
    assert dict(cpu_asm.count_classes(body)) == {
        "vec_alu_512": 2,  # vpaddd, vpxord
        "vec_shift_512": 1,  # vprold
        "load": 2,  # vpxord's memory source; xorl's read of its memory destination
        "store_512": 1,  # vmovdqu64 to memory
        "sha_rnds": 1,
        "scalar_alu": 4,  # addl, leaq (an address, no load), xorl, cmpl
        "store": 1,  # xorl's write
        "branch": 1,
    }
    # one call must do 64 lanes of packed adds: 16 a pass, so the loop runs 4 times, and the
    # code outside it (a load, the return) once
    dyn = cpu_asm.dynamic_counts(instrs, "add", 64)
    assert dyn["vec_alu_512"] == 8 and dyn["sha_rnds"] == 4 and dyn["load"] == 4 * 2 + 1
    assert dyn["branch"] == 4 + 1


def test_the_port_bound_takes_the_busiest_ports_and_the_issue_width():
    zen4, icelake = cpu_ports.core_for("znver4"), cpu_ports.core_for("icelake-server")
    mix = {"vec_alu_512": 2, "vec_shift_512": 1}
    # Zen 4: a 512-bit op holds a 256-bit pipe for two cycles; adds on 4 pipes, rotates on 2
    assert cpu_ports.port_bound_cycles(mix, zen4) == (1.5, "fp0+fp1+fp2+fp3")
    # Ice Lake: 512-bit adds on p0 and p5, rotates on p0 only
    assert cpu_ports.port_bound_cycles(mix, icelake) == (1.5, "p0+p5")
    assert cpu_ports.port_bound_cycles({"vec_shift_512": 3, "vec_alu_512": 1}, icelake) == (3.0, "p0")
    assert cpu_ports.port_bound_cycles({"scalar_alu": 12}, icelake) == (3.0, "p0+p1+p5+p6")
    assert cpu_ports.port_bound_cycles({"scalar_alu": 12, "load": 12}, icelake)[1] == "p2+p3"
    assert cpu_ports.port_bound_cycles({"scalar_alu": 6, "vec_alu": 6, "load": 6}, icelake) == (18 / 5, "issue")
    # SHA256RNDS2: one port, ~3 cycles on Ice Lake, 2 on Zen: 60 of them a nonce
    assert cpu_ports.port_bound_cycles({"sha_rnds": 60}, icelake) == (180.0, "p5")
    assert cpu_ports.port_bound_cycles({"sha_rnds": 60}, zen4) == (120.0, "fp1")


def test_a_cpu_without_a_table_is_said_so():
    assert "no table for pentium4" in cpu_ports.core_for("pentium4").name
    assert cpu_ports.core_for("icelake-server").name.startswith("Ice Lake")
    assert cpu_ports.core_for("znver3").name == "Zen 4"


# `miner bench --static` compiles each kernel's hot code afresh (minutes on a loaded 2-core
# machine): begun in the compile lane, beside the rest of the suite.
compile_lane.LANE_JOBS["bench_static"] = lambda: compile_lane.child(
    "import runpy, sys\nsys.argv = ['miner'] + sys.argv[1:]\nrunpy.run_module('miner', run_name='__main__')",
    args=("bench", "--static", "--json", "--duration", "0.1"), timeout=1200)
compile_lane.LANE_FIXTURES["bench_static"] = ["bench_static"]


@pytest.fixture
def bench_static():
    return compile_lane.LANE.result("bench_static")


def test_miner_bench_static_models_and_measures_every_cpu_kernel(bench_static):
    """On this CPU, whatever it is: sha256d simd (and sha where it has SHA extensions) and scrypt,
    each with instructions per nonce/hash by class, a bound, a measured rate and their ratio."""
    from miner.kernels import cpu_select
    rc, out, err = bench_static
    assert rc == 0, err[-3000:]
    doc = json.loads(out)
    assert doc["ghz"] and 0.5 < doc["ghz"] < 7, doc["ghz"]  # the measured clock is a clock
    kernels = {k["kernel"].rsplit(" ", 1)[0] if k["kernel"].startswith("scrypt") else k["kernel"]: k
               for k in doc["kernels"]}
    expected = {"sha256d simd", "scrypt"} | ({"sha256d sha"} if "sha" in cpu_select.enabled_features() else set())
    assert set(kernels) == expected, list(kernels)
    for k in kernels.values():
        assert k["instructions"] == pytest.approx(sum(k["per_unit"].values()))
        assert k["bound_per_core"] > 0 and k["measured_per_core"] > 0
        assert k["ratio"] == pytest.approx(k["measured_per_core"] / k["bound_per_core"])
        # a lower bound on cycles: a kernel well past it means the counting is broken
        assert 0 < k["ratio"] < 1.5, k
    assert kernels["sha256d simd"]["unit"] == "nonce" and kernels["scrypt"]["unit"] == "hash"
    if "sha256d sha" in kernels:
        assert kernels["sha256d sha"]["per_unit"]["sha_rnds"] > 50  # ~2 x 32 two-round steps a nonce


def test_static_without_a_modelled_backend_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "miner", "bench", "--static", "--backend", "ref"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--static models the cpu and cuda backends" in proc.stderr
    assert "Traceback" not in proc.stderr
