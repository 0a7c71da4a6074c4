"""Which CPU kernel to run: what the CPU offers, and which of those is fastest on it.

Two kernels share one search (`miner.kernels.cpu.make_search`):

* `simd`: the generated kernel, one nonce per vector lane: 16 lanes with AVX-512F, 8 with AVX2,
  4 with SSE (see `cpu_width` for why the width is forced rather than left to LLVM's tuning);
* `sha`: the SHA-extensions kernel (`cpu_shani`), four nonces in flight per thread.

Which is faster depends on the core, not on a rule: on Zen 4 the two are within 10% of each
other (16 lanes ahead on two threads), Intel's AVX-512 cores favour 16 lanes, and on CPUs with
SHA but no AVX-512 (most desktops) `sha` runs three times as fast as 8 AVX2 lanes. So `auto`
measures both once, briefly, and keeps the answer in a small JSON file keyed by the CPU name,
its feature string and the kernels' source, so a new CPU or a changed kernel measures again.

Everything here reads the CPU as numba will compile for it (honouring NUMBA_CPU_NAME and
NUMBA_CPU_FEATURES), because that is what decides which instructions the kernels may use.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from miner.kernels.tuning_cache import cache_dir, read_entries, write_entries

KERNELS = ("simd", "sha")
CHOICES = ("auto",) + KERNELS
CHOICE_FILE_NAME = "cpu-kernel.json"


def target_cpu() -> tuple[str, str]:
    """(CPU name, feature string) that numba compiles for in this process."""
    import llvmlite.binding as llvm
    from numba.core import codegen, config
    name = config.CPU_NAME or llvm.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    return name, features


def enabled_features(features: str | None = None) -> set[str]:
    """The features an LLVM feature string such as '+avx2,-avx512f' turns on; as in LLVM, a
    later entry overrides an earlier one for the same feature."""
    if features is None:
        features = target_cpu()[1]
    state: dict[str, bool] = {}
    for f in features.split(","):
        f = f.strip()
        if f[:1] in "+-" and len(f) > 1:
            state[f[1:]] = f[0] == "+"
    return {name for name, on in state.items() if on}


def without_avx512(features: str) -> str:
    """The same feature string with every AVX-512, AVX10 and AMX feature turned off: how a
    test or a benchmark makes this CPU look like a desktop part without AVX-512."""
    out = []
    for f in features.split(","):
        name = f[1:]
        if name.startswith(("avx512", "avx10", "amx", "evex512")):
            out.append("-" + name)
        else:
            out.append(f)
    if "-avx512f" not in out:
        out.append("-avx512f")
    return ",".join(x for x in out if x)


def simd_lanes(features: set[str] | None = None) -> int:
    """Nonces per vector instruction of the SIMD kernel on this CPU."""
    features = enabled_features() if features is None else features
    if "avx512f" in features:
        return 16
    if "avx2" in features:
        return 8
    return 4


def unavailable_reason(kernel: str, features: set[str] | None = None) -> str | None:
    """Why `kernel` cannot run here, or None when it can."""
    features = enabled_features() if features is None else features
    if kernel == "sha" and "sha" not in features:
        return "this CPU has no SHA extensions (sha256rnds2)"
    if kernel not in KERNELS:
        return f"unknown CPU kernel {kernel!r} (use {', '.join(CHOICES)})"
    return None


def available() -> list[str]:
    features = enabled_features()
    return [k for k in KERNELS if unavailable_reason(k, features) is None]


def describe(kernel: str) -> str:
    if kernel == "sha":
        from miner.kernels.cpu_shani import LANES
        return f"SHA extensions, {LANES} nonces in flight"
    lanes = simd_lanes()
    isa = {16: "AVX-512", 8: "AVX2", 4: "SSE"}[lanes]
    return f"SIMD {lanes} lanes ({isa})"


def search_function(kernel: str):
    """The compiled (or cached) search of one kernel. Import only what that kernel needs: the
    SHA kernel's module must never be compiled on a CPU without SHA extensions."""
    from miner.kernels import cpu
    if kernel == "simd":
        return cpu.search
    reason = unavailable_reason(kernel)
    if reason:
        raise RuntimeError(reason)
    global _sha_search
    if _sha_search is None:
        _sha_search = cpu.make_search(cpu.SHA)
    return _sha_search


_sha_search = None


# ---------------------------------------------------------------------------- the choice


def _choice_file() -> Path:
    """Read at each use, not import, so MINER_CACHE set later (tests, a wrapper) is honoured."""
    return cache_dir() / CHOICE_FILE_NAME


def choice_key() -> str:
    """CPU name, a digest of its features and of the kernels' source: what a measurement holds for."""
    from miner.kernels.cpu import kernel_source_digest
    name, features = target_cpu()
    digest = hashlib.sha256(features.encode() + kernel_source_digest().encode())
    return f"{name}:{digest.hexdigest()[:20]}"


def measure(kernels: list[str], seconds: float = 0.25, rounds: int = 3,
            threads: int | None = None) -> dict[str, float]:
    """Hash rate of each kernel on every core at once (as mining runs them: the SHA units or
    the vector units may be shared between a core's threads): `rounds` alternating runs of
    about `seconds` each, median. Hard target, so only the counting loop is timed."""
    from concurrent.futures import ThreadPoolExecutor

    from miner.kernels import cpu
    if threads is None:
        threads = cpu.default_threads()
    job = np.arange(11, dtype=np.uint32)
    target = np.zeros(8, dtype=np.uint32)
    outs = [np.zeros(1, dtype=np.int64) for _ in range(threads)]
    searches = {k: search_function(k) for k in kernels}
    counts = {}
    for k, fn in searches.items():  # compile or load, then size a run to about `seconds`
        fn(job, target, 0, 2 * cpu.CHUNK, outs[0])
        n = 1 << 16
        while True:
            t0 = time.perf_counter()
            fn(job, target, 0, n, outs[0])
            dt = time.perf_counter() - t0
            if dt >= seconds / 4 or n >= 1 << 30:
                break
            n *= 2
        counts[k] = max(cpu.CHUNK, int(n * seconds / max(dt, 1e-6)) // cpu.CHUNK * cpu.CHUNK)
    rates: dict[str, list[float]] = {k: [] for k in kernels}
    with ThreadPoolExecutor(threads) as pool:
        for r in range(rounds):
            for k, fn in searches.items():
                n = counts[k]
                t0 = time.perf_counter()
                starts = [(r * threads + i) * n for i in range(threads)]
                list(pool.map(fn, [job] * threads, [target] * threads, starts, [n] * threads, outs))
                rates[k].append(threads * n / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()}


def check_choice(choice: str) -> str:
    """`choice` (auto, simd or sha) normalised, or a usage error naming what is wrong with it."""
    from miner.errors import InvalidInput
    choice = choice.strip().lower()
    if choice not in CHOICES:
        raise InvalidInput(f"unknown CPU kernel {choice!r} (use {', '.join(CHOICES)})")
    if choice != "auto" and (reason := unavailable_reason(choice)):
        raise InvalidInput(f"CPU kernel {choice!r} is not available here: {reason}")
    return choice


def stored_choice() -> str | None:
    """The `auto` kernel as stored for this CPU when no measurement is due, else None."""
    kernels = available()
    if len(kernels) == 1:
        return kernels[0]
    entry = read_entries(_choice_file()).get(choice_key())
    if not isinstance(entry, dict) or entry.get("kernel") not in kernels:
        return None
    attempts = entry.get("attempts", 1) if isinstance(entry.get("attempts"), int) else 1
    if entry.get("provisional") and attempts < MAX_PROVISIONAL:
        return None
    return entry["kernel"]


def has_provisional_choice() -> bool:
    """Whether a choice is stored for this CPU but is to be timed again (it was timed on a busy
    machine), so `choose("auto")` will time the kernels rather than read it."""
    entry = read_entries(_choice_file()).get(choice_key())
    return (isinstance(entry, dict) and entry.get("kernel") in available() and bool(entry.get("provisional"))
            and stored_choice() is None)


def is_compiled(kernel: str) -> bool:
    """Whether numba's cache holds `kernel`'s search for this CPU, so it loads in about a second
    instead of compiling for a minute. Asks numba's cache index the way a call would (its
    internals: anything unexpected answers False, and the caller compiles, which is always
    right)."""
    try:
        from numba import typeof
        fn = search_function_uncompiled(kernel)
        args = (np.zeros(11, dtype=np.uint32), np.zeros(8, dtype=np.uint32), 0, 1, np.zeros(1, dtype=np.int64))
        key = fn._cache._index_key(tuple(typeof(a) for a in args), fn.targetctx.codegen())
        return key in fn._cache._cache_file._load_index()
    except Exception:  # noqa: BLE001  (numba's private cache API moved: take the compile path)
        return False


def search_function_uncompiled(kernel: str):
    """The search's dispatcher, without compiling it (`search_function` for the SIMD kernel)."""
    from miner.kernels import cpu
    return cpu.search if kernel == "simd" else search_function(kernel)


UNDER_LOAD = 0.75  # load average per core at or above which a measurement is provisional (no /proc/stat)
OTHERS_BUSY = 0.25  # share of all cores other programs used while timing, at or above which it is provisional
MAX_PROVISIONAL = 3  # measurements under load before the last one is kept anyway


def load_per_core() -> float:
    """The one-minute load average per core (0 where the system does not say)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (OSError, AttributeError):
        return 0.0


def _cpu_snapshot() -> tuple[float, float, float] | None:
    """(monotonic time, seconds every core was busy, this process's own CPU seconds), or None
    where /proc/stat does not exist (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    ticks = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return time.monotonic(), (user + nice + system + irq + softirq + steal) / ticks, own.user + own.system


def others_share(start: tuple[float, float, float], end: tuple[float, float, float], cpus: int) -> float:
    """The share of the machine (all `cpus` cores over the interval) that other programs used
    between two snapshots: the busy time the kernel counted, less this process's own."""
    wall = max(end[0] - start[0], 1e-9)
    others = (end[1] - start[1]) - (end[2] - start[2])
    return max(0.0, others) / (wall * max(cpus, 1))


class OtherWork:
    """How much of the CPU other programs took while something of ours was being timed.

    Why not the load average: it is a minute's average and it counts our own work (the
    compile that just ended, the threads being timed), so on 2 cores every first run looked
    busy and every choice stayed provisional. What spoils a comparison of two kernels is
    someone else taking cores during those few seconds, and /proc/stat says exactly that
    (hypervisor steal included). Where it does not exist the load average stands in."""

    def __init__(self) -> None:
        self._start = _cpu_snapshot()

    def share(self) -> float | None:
        """Other programs' share of all cores since this was made, or None if unknown."""
        end = _cpu_snapshot()
        if self._start is None or end is None:
            return None
        return others_share(self._start, end, os.cpu_count() or 1)


def compile_kernels(kernels: list[str] | None = None) -> None:
    """Compile (or load) each kernel's search into numba's cache, timing nothing. A first run's
    child process does this while the stand-in mines; the `auto` choice is timed afterwards in
    the miner itself, with the stand-in stopped, so both kernels are timed alike on a machine
    our own run is not loading."""
    from miner.kernels import cpu
    job = np.zeros(11, dtype=np.uint32)
    target = np.full(8, 0xFFFFFFFF, dtype=np.uint32)
    for k in kernels if kernels is not None else available():
        search_function(k)(job, target, 0, 2 * cpu.CHUNK + 1, np.zeros(1, dtype=np.int64))


def choose(preference: str = "auto", remeasure: bool = False,
           before_measure: Callable[[], None] | None = None) -> tuple[str, str]:
    """(kernel, why): the kernel named, or for `auto` the fastest measured here (measured once
    per CPU and kernel source, then read from the choice file). Both kernels are timed alike,
    in alternating rounds; a measurement during which other programs took `OTHERS_BUSY` of the
    CPU or more (`OtherWork`; where that cannot be read, a load average of `UNDER_LOAD` per
    core) is provisional and taken again on the next use, up to `MAX_PROVISIONAL` times, so one
    busy moment is not kept for ever. `remeasure`: measure now whatever is stored (`miner bench
    --cpu-kernel auto`). `before_measure` is called just before timing (and only then): the
    miner stops its own stand-in there, so the timing is not shared with it."""
    preference = check_choice(preference)
    if preference != "auto":
        return preference, "chosen"
    kernels = available()
    if len(kernels) == 1:
        return kernels[0], "the only kernel this CPU runs"
    key = choice_key()
    data = read_entries(_choice_file())
    entry = data.get(key)
    valid = isinstance(entry, dict) and entry.get("kernel") in kernels
    attempts = entry.get("attempts", 1) if valid and isinstance(entry.get("attempts"), int) else 1
    if valid and not remeasure and (not entry.get("provisional") or attempts >= MAX_PROVISIONAL):
        return entry["kernel"], "measured earlier on this CPU"
    attempts = attempts + 1 if valid and entry.get("provisional") and not remeasure else 1
    if before_measure is not None:
        before_measure()
    meter = OtherWork()
    rates = measure(kernels)
    others = meter.share()
    best = max(rates, key=rates.get)
    entry = {"kernel": best, "rates": rates, "date": time.strftime("%Y-%m-%d"), "attempts": attempts}
    if others is not None:
        provisional = others >= OTHERS_BUSY
        busy = f"other programs took {others:.0%} of the CPU while it was timed"
        entry["others_busy"] = round(others, 2)
    else:
        load = load_per_core()
        provisional = load >= UNDER_LOAD
        busy = f"load {load:.1f} a core"
        entry["load_per_core"] = round(load, 2)
    entry["provisional"] = provisional
    data[key] = entry
    write_entries(_choice_file(), data)  # unwritable: measured again next time, nothing lost
    why = "measured now: " + ", ".join(f"{k} {v / 1e6:.1f} MH/s" for k, v in rates.items())
    if provisional and attempts < MAX_PROVISIONAL:
        why += f" (the machine was busy, {busy}: measured again next time)"
    return best, why
