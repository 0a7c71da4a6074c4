"""Per-microarchitecture port tables for the CPU kernels' static model (`cpu_model`), and the
port bound: the fewest cycles a count of instructions by class needs on a core's ports.

Each class of instruction may issue on a set of ports, each use holding a port for `weight`
cycles (2 for a 512-bit operation split in two 256-bit halves on Zen 4, more for an instruction
that is not fully pipelined). The bound is the largest, over every union of port sets, of the work
that must go to that union divided by its ports, and at least the instructions over the issue
width: a lower bound on cycles (latency and the caches left out).

Figures, by class, from the public tables: uops.info (measured port usage and throughput per
instruction and microarchitecture, https://uops.info/table.html) and Agner Fog's instruction
tables (https://www.agner.org/optimize/instruction_tables.pdf). Only the few classes these
kernels use are listed, rounded as noted; they are a model's inputs, not a copy of either table.
Where a figure is marked `approx` it is our reading of those tables and should be checked before
a conclusion leans on it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class Use:
    ports: tuple[str, ...]
    weight: float = 1.0  # cycles a port is held per instruction


@dataclass(frozen=True)
class Core:
    name: str
    issue_width: int  # instructions (fused) renamed a cycle
    classes: dict  # class -> Use
    source: str


def _ice_lake() -> Core:
    """Sunny Cove (Ice Lake client and server, LLVM `icelake-client`/`icelake-server`; Tiger Lake
    is the same core for these classes). uops.info ICL/ICX port columns; Agner Fog, Ice Lake table."""
    v3, v2 = ("p0", "p1", "p5"), ("p0", "p5")  # vector ALU ports: 512-bit ops fuse p0+p1 and use p5
    return Core("Ice Lake (Sunny Cove)", 5, {
        "vec_alu": Use(v3), "vec_alu_512": Use(v2),  # vpaddd, vpxor(d), vpternlogd: 0.33 / 0.5
        "vec_shift": Use(("p0", "p1")), "vec_shift_512": Use(("p0",)),  # vprold, vpsrld: 0.5 / 1
        "shuffle": Use(("p1", "p5")), "shuffle_512": Use(("p5",)),  # vpshufb/vpshufd/vpalignr (approx)
        "sha_rnds": Use(("p5",), 3.0),  # sha256rnds2: reciprocal throughput ~3 (approx)
        "sha_msg": Use(("p5",), 1.0),  # sha256msg1/msg2: ~1 (approx)
        "gather": Use(("p2", "p3"), 8.0), "scatter": Use(("p4", "p9"), 8.0),  # per 16 elements (approx)
        "scalar_alu": Use(("p0", "p1", "p5", "p6")), "scalar_shift": Use(("p0", "p6")),
        "load": Use(("p2", "p3")), "store": Use(("p4", "p9")), "store_512": Use(("p4",)),
        "branch": Use(("p0", "p6")), "call": Use(("p6",), 2.0),
    }, "uops.info (ICL, ICX), Agner Fog's instruction tables (Ice Lake)")


def _zen4() -> Core:
    """Zen 4 (LLVM `znver4`), and for these classes Zen 3 (`znver3`, no 512-bit ops). uops.info
    ZEN4/ZEN3 columns; Agner Fog, Zen 4 table; a 512-bit op holds a 256-bit pipe two cycles."""
    f4, f12 = ("fp0", "fp1", "fp2", "fp3"), ("fp1", "fp2")
    return Core("Zen 4", 6, {
        "vec_alu": Use(f4), "vec_alu_512": Use(f4, 2.0),  # vpaddd, vpxor(d), vpternlogd: 0.25 / 0.5
        "vec_shift": Use(f12), "vec_shift_512": Use(f12, 2.0),  # vprold, vpsrld: 0.5 / 1
        "shuffle": Use(f12), "shuffle_512": Use(f12, 2.0),
        "sha_rnds": Use(("fp1",), 2.0),  # sha256rnds2: latency 4, reciprocal throughput 2
        "sha_msg": Use(("fp1", "fp2"), 1.0),  # sha256msg1/msg2 (approx)
        "gather": Use(("ld0", "ld1"), 8.0), "scatter": Use(("st0",), 16.0),  # per 16 elements (approx)
        "scalar_alu": Use(("alu0", "alu1", "alu2", "alu3")), "scalar_shift": Use(("alu1", "alu2")),
        "load": Use(("ld0", "ld1", "ld2")), "store": Use(("st0", "st1")), "store_512": Use(("st0",), 2.0),
        "branch": Use(("alu0", "alu3")), "call": Use(("alu0",), 2.0),
    }, "uops.info (ZEN4, ZEN3), Agner Fog's instruction tables (Zen 4)")


def _haswell_like() -> Core:
    """Haswell to Comet Lake (LLVM `haswell` ... `skylake`): AVX2, no 512-bit ops, no SHA."""
    core = _ice_lake()
    classes = dict(core.classes)
    classes.update({"shuffle": Use(("p5",)), "store": Use(("p4",)), "sha_rnds": Use(("p5",), 3.0)})
    return Core("Haswell/Skylake", 4, classes, "uops.info (HSW, SKL), Agner Fog's instruction tables")


def _skylake_x() -> Core:
    core = _ice_lake()
    classes = dict(core.classes)
    classes.update({"shuffle": Use(("p5",)), "store": Use(("p4",)), "store_512": Use(("p4",))})
    return Core("Skylake-X / Cascade Lake", 4, classes, "uops.info (SKX, CLX), Agner Fog's instruction tables")


CORES = {
    "icelake": _ice_lake, "tigerlake": _ice_lake, "rocketlake": _ice_lake, "sapphirerapids": _ice_lake,
    "skylake-avx512": _skylake_x, "cascadelake": _skylake_x, "cooperlake": _skylake_x,
    "znver4": _zen4, "znver5": _zen4, "znver3": _zen4, "znver2": _zen4,
    "haswell": _haswell_like, "broadwell": _haswell_like, "skylake": _haswell_like,
}


def core_for(cpu: str) -> Core:
    """The port model for an LLVM CPU name (`icelake-server` counts as Ice Lake); a name we have
    no table for gets the Ice Lake model, said so in the report's `core` line."""
    for prefix, make in CORES.items():
        if cpu.startswith(prefix):
            return make()
    core = _ice_lake()
    return Core(core.name + f" (no table for {cpu}: Ice Lake's used)", core.issue_width, core.classes, core.source)



def port_bound_cycles(counts: dict, core: Core) -> tuple[float, str]:
    """Fewest cycles the counted instructions need on `core`'s ports (and issue width), and what
    binds: the busiest union of port sets, or issue."""
    uses = {k: core.classes[k] for k in counts if k in core.classes and counts[k]}
    port_sets = {frozenset(u.ports) for u in uses.values()}
    best, what = 0.0, "nothing"
    for r in range(1, len(port_sets) + 1):
        for combo in itertools.combinations(port_sets, r):
            union = frozenset().union(*combo)
            work = sum(counts[k] * u.weight for k, u in uses.items() if frozenset(u.ports) <= union)
            if work / len(union) > best:
                best, what = work / len(union), "+".join(sorted(union))
    issue = sum(counts.values()) / core.issue_width
    if issue > best:
        best, what = issue, "issue"
    return best, what


