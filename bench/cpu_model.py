"""A static model of each CPU kernel's limit, as `bench/sass.py` is for the CUDA kernel: from
the assembly numba/LLVM generates (for the CPU at hand, or a named one), instructions per nonce
(SHA-256d: the SIMD and the SHA-extensions kernel) and per hash (scrypt, the variant chosen), by
execution-port class, and the port-bound rate of one core at a given clock.

    python -m miner.bench.cpu_model [--cpu icelake-server] [--ghz 3.0] [--json]
    miner bench --static                 (the same for the CPU at hand, beside measured rates)

How the counting goes. Each kernel's hot code is compiled (never run) and its assembly split into
functions; the hot loop of a SHA-256d kernel is its largest backward branch, and a loop pass
covers 2 x vector-lanes nonces (the SIMD kernel hashes a pair of nonces a lane) or the SHA
kernel's `LANES`. scrypt per hash is (2,048 BlockMix + 1,024 pad stores + 1,024 pad reads) for a
lane group over its width; each of those three functions is counted whole, a loop in it counted
as many times as the work it must do requires (288 x width packed-add lanes a BlockMix, 32 x
width words stored or XORed a pad step). PBKDF2 (scalar SHA-256, about a twentieth of scrypt's
work) is left out, so the scrypt bound is a little high. An instruction that reads memory counts
a load besides its operation; one that writes memory, a store.

The port model: each class of instruction may issue on a set of ports, each use occupying a port
for `weight` cycles (2 for a 512-bit operation split in two 256-bit halves on Zen 4, more for an
instruction that is not fully pipelined). The bound in cycles is the largest, over every union of
port sets, of the work that must go to that union divided by its ports, and at least the
instructions over the issue width. That is a lower bound on cycles (latency, the caches and the
front end beyond the issue width are left out): the measured rate over the bound says how close
a kernel is to what its instruction mix allows.

Per-instruction figures, by class, from the public tables: uops.info (measured port usage and
throughput per instruction and microarchitecture, https://uops.info/table.html) and Agner Fog's
instruction tables (https://www.agner.org/optimize/instruction_tables.pdf). Only the few
classes these kernels use are listed, rounded as noted; they are a model's inputs, not a copy of
either table. Where a figure is marked `approx` it is our reading of a range in those tables
and should be checked before a conclusion leans on it.

Why the SHA kernel loses to 16 AVX-512 lanes on Ice Lake but not on Zen: SHA256RNDS2 does two
rounds of one hash, and a nonce's SHA-256d takes 62 of them (both compressions, less the round
pair hoisted out of the loop and the one left out at the end). uops.info and Agner Fog give it
one port and a reciprocal throughput of about 3 cycles on Ice Lake (approx), where the message
instructions and shuffles queue on the same port 5: the model counts 231 cycles a nonce for the
code LLVM makes for `icelake-server`. The SIMD kernel's 512-bit adds and three-input logic for
16 nonces at once issue on p0 and p5 (rotates on p0): about 100 cycles a nonce. On Zen 4
SHA256RNDS2 takes 2 cycles on its pipe (latency 4) and the message instructions go elsewhere,
124 cycles a nonce, while a 512-bit operation holds a 256-bit pipe for two cycles, so the SIMD
kernel's bound is also about 100: within a quarter of each other, and which wins is a
measurement (which `cpu_select` makes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field

from miner.bench.cpu_asm import count_classes, dynamic_counts, kernel_function, lanes_of, largest_loop
from miner.bench.cpu_ports import Core, core_for, port_bound_cycles


@dataclass
class KernelModel:
    kernel: str  # "sha256d simd", "sha256d sha", "scrypt 16w"
    unit: str  # "nonce" or "hash"
    per_unit: dict = field(default_factory=dict)  # class -> instructions per nonce/hash
    cycles: float = 0.0  # port-bound cycles per nonce/hash
    binding: str = ""
    note: str = ""

    @property
    def instructions(self) -> float:
        return sum(self.per_unit.values())

    def bound_rate(self, ghz: float) -> float:
        """Hashes a second one core can at most do at `ghz`."""
        return ghz * 1e9 / self.cycles if self.cycles else float("inf")


def model(kernel: str, unit: str, counts: Counter, per: float, core: Core, note: str = "") -> KernelModel:
    per_unit = {k: v / per for k, v in sorted(counts.items())}
    cycles, binding = port_bound_cycles(per_unit, core)
    return KernelModel(kernel, unit, per_unit, cycles, binding, note)


# ------------------------------------------------------------------ the kernels' assembly


def _asm(dispatcher, sig) -> str:
    """The assembly of a plain (uncached) copy of a numba function: a cached dispatcher may hold
    no assembly to show."""
    from numba import njit
    fn = njit(nogil=True, boundscheck=False)(dispatcher.py_func)
    fn.compile(sig)
    return next(iter(fn.inspect_asm().values()))


# LLVM CPU names whose default features include the SHA extensions: a CPU named with `--cpu`
# comes with an empty feature string (LLVM's defaults for the name), and asking LLVM to select
# sha256rnds2 for a CPU without them ends the process rather than raising.
SHA_CPUS = ("goldmont", "tremont", "icelake", "tigerlake", "rocketlake", "alderlake", "raptorlake",
            "meteorlake", "sapphirerapids", "emeraldrapids", "graniterapids", "arrowlake", "lunarlake",
            "gracemont", "sierraforest", "grandridge", "cannonlake", "znver")


def sha256d_models(core: Core, features: set[str], cpu: str = "") -> list[KernelModel]:
    from miner.kernels import cpu_sha256d, cpu_shani
    from numba import types
    sig = (types.Array(types.uint32, 1, "C"), types.uint32, types.int64, types.uint32)
    out = []
    kernels = [("simd", cpu_sha256d.count_candidates)]
    if "sha" in features or (not features and cpu.startswith(SHA_CPUS)):
        kernels.append(("sha", cpu_shani.count_candidates))
    for name, fn in kernels:
        instrs = kernel_function(_asm(fn, sig), "count_candidates")
        loop = largest_loop(instrs, vector=True)
        if loop is None:
            raise ValueError(f"no loop in the {name} kernel")
        body = instrs[loop[0]:loop[1] + 1]
        if name == "simd":
            width = max((lanes_of(i) for i in body if i.bits), default=1)
            per, how = 2 * width, f"a loop pass hashes 2 x {width} lanes"
        else:
            per, how = cpu_shani.LANES, f"a loop pass hashes {cpu_shani.LANES} nonces"
        out.append(model(f"sha256d {name}", "nonce", count_classes(body), per, core, how))
    return out


def scrypt_model(core: Core, variant: str) -> KernelModel:
    from miner.kernels import cpu_scrypt
    from numba import types
    k = cpu_scrypt.kernel(variant)
    W, N = k.width, cpu_scrypt.N
    a = types.Array(types.uint32, 1, "C")
    mix = dynamic_counts(kernel_function(_asm(k.block_mix, (a,)), "block_mix"), "add", 288 * W)
    store = dynamic_counts(kernel_function(_asm(k.pad_store, (a, a, types.int64)), "pad_store"), "store", 32 * W)
    xor = dynamic_counts(kernel_function(_asm(k.pad_xor, (a, a)), "pad_xor"), "xor", 32 * W)
    total: Counter = Counter()
    for counts, times in ((mix, 2 * N), (store, N), (xor, N)):
        for c, n in counts.items():
            total[c] += n * times
    return model(f"scrypt {variant}", "hash", total, W, core,
                 f"{k.variant.describe()}; PBKDF2 not counted (~5% of the work)")


def measured_ghz(seconds: float = 0.2) -> float | None:
    """This core's clock while busy, measured: a chain of x = x * x + i, each step waiting for the
    last: a 64-bit multiply (3 cycles of latency on every Intel core since Sandy Bridge and every
    AMD one since Zen, uops.info's IMUL (R64, R64) column) and an add (1), timed, best of five;
    None if numba cannot run it. (x * constant was folded by LLVM into fewer multiplies.)"""
    import time

    from numba import njit
    try:
        chain = njit(_multiply_chain)
        chain(3, 10)
        n = 1 << 20
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            chain(3, n)
            best = min(best, time.perf_counter() - t0)
        return 4 * n / best / 1e9
    except Exception:  # noqa: BLE001  (a report without a measured clock still says the rest)
        return None


def _multiply_chain(x, n):
    for i in range(n):
        x = x * x + i
    return x


def host_ghz() -> float | None:
    """The clock /proc/cpuinfo reports (the nominal one under most hypervisors), in GHz."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) / 1000
    except (OSError, ValueError):
        pass
    return None


def analyse(scrypt_variant: str | None = None) -> dict:
    """Every CPU kernel's model for the CPU numba compiles for in this process (NUMBA_CPU_NAME
    names another; `--cpu` sets it for a child)."""
    from miner.kernels import cpu_scrypt, cpu_select
    name, _ = cpu_select.target_cpu()
    features = cpu_select.enabled_features()
    core = core_for(name)
    models = sha256d_models(core, features, name)
    models.append(scrypt_model(core, scrypt_variant or cpu_scrypt.DEFAULT))
    return {"cpu": name, "core": core.name, "source": core.source, "models": models}


def report_lines(report: dict, ghz: float | None, measured: dict | None = None) -> list[str]:
    """The report as text: per kernel, instructions per nonce/hash by class, the bound at `ghz`,
    and beside it the measured rate per core and their ratio where `measured` has one."""
    measured = measured or {}
    lines = [f"CPU model: {report['cpu']} -> {report['core']} port tables ({report['source']})",
             f"clock: {ghz:.2f} GHz" if ghz else "clock: unknown (give --ghz)"]
    for m in report["models"]:
        classes = ", ".join(f"{k} {v:,.1f}" for k, v in m.per_unit.items() if v >= 0.05)
        lines.append(f"{m.kernel}: {m.instructions:,.1f} instructions per {m.unit} ({m.note})")
        lines.append(f"  by class: {classes}")
        bound = m.bound_rate(ghz) if ghz else None
        scale, unit = (1e6, "MH/s") if m.unit == "nonce" else (1e3, "kH/s")
        text = f"  bound: {m.cycles:,.1f} cycles per {m.unit} on {m.binding}"
        if bound:
            text += f" = {bound / scale:,.2f} {unit} a core"
        rate = measured.get(m.kernel)
        if rate:
            text += f"; measured {rate / scale:,.2f} {unit} a core"
            if bound:
                text += f" = {rate / bound:.2f} of the bound"
        lines.append(text)
    return lines


def as_json(report: dict, ghz: float | None, measured: dict | None = None) -> dict:
    measured = measured or {}
    return {"cpu": report["cpu"], "core": report["core"], "source": report["source"], "ghz": ghz,
            "kernels": [{**asdict(m), "instructions": m.instructions,
                         "bound_per_core": m.bound_rate(ghz) if ghz else None,
                         "measured_per_core": measured.get(m.kernel),
                         "ratio": (measured[m.kernel] / m.bound_rate(ghz)) if ghz and measured.get(m.kernel) else None}
                        for m in report["models"]]}


def measure_per_core(report: dict, seconds: float = 0.5, rounds: int = 3) -> dict:
    """Each modelled kernel's rate on one thread (medians of `rounds` alternating runs): what the
    bound is compared with. One thread, because the bound is one core's."""
    from miner.kernels import cpu_scrypt_select, cpu_select
    out = {}
    sha = [m.kernel.split()[1] for m in report["models"] if m.kernel.startswith("sha256d")]
    for k, rate in cpu_select.measure(sha, seconds=seconds, rounds=rounds, threads=1).items():
        out[f"sha256d {k}"] = rate
    variants = [m.kernel.split()[1] for m in report["models"] if m.kernel.startswith("scrypt")]
    for v, rate in cpu_scrypt_select.measure(variants, seconds=seconds, rounds=rounds, threads=1).items():
        out[f"scrypt {v}"] = rate
    return out


def static_report(seconds: float, as_json_doc: bool) -> int:
    """`miner bench --static` for the CPU: the model for the CPU at hand (the scrypt variant `auto`
    keeps here, else the default), each kernel measured on one core, and the ratio."""
    import time

    from miner.kernels import cpu_scrypt_select
    report = analyse(cpu_scrypt_select.stored_choice())
    ghz = measured_ghz() or host_ghz()
    measured = measure_per_core(report, seconds)
    if as_json_doc:
        print(json.dumps({**as_json(report, ghz, measured), "date": time.strftime("%Y-%m-%d")}, indent=2))
    else:
        print("\n".join(report_lines(report, ghz, measured)))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m miner.bench.cpu_model", description=__doc__.splitlines()[0])
    p.add_argument("--cpu", default=None,
                   help="model the code LLVM makes for this CPU (an LLVM name such as icelake-server, znver4)")
    p.add_argument("--ghz", type=float, default=None,
                   help="clock for the bound (default: measured on this core, else /proc/cpuinfo's)")
    p.add_argument("--scrypt-variant", default=None, help="scrypt variant to model (default: the default build)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.cpu:  # numba reads the target CPU once, at import: a child compiles for the one named
        import os
        import subprocess
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--cpu", args.cpu)
                and not a.startswith("--cpu=")]
        env = {**os.environ, "NUMBA_CPU_NAME": args.cpu, "NUMBA_CPU_FEATURES": ""}
        return subprocess.run([sys.executable, "-m", "miner.bench.cpu_model", *rest], env=env).returncode
    ghz = args.ghz or measured_ghz() or host_ghz()
    try:
        report = analyse(args.scrypt_variant)
    except (ValueError, KeyError) as exc:
        print(f"cpu_model: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(as_json(report, ghz), indent=2))
    else:
        print("\n".join(report_lines(report, ghz)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
