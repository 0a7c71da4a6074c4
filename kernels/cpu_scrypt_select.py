"""Which build of the CPU scrypt kernel to run (`cpu_scrypt.VARIANTS`): measured once per CPU.

The SHA-256d kernel's choice (`cpu_select`) has the same shape: what is fastest depends on the
core (vector ports, L2 size, L3 latency; see `cpu_scrypt`'s docstring), not on a rule that
holds everywhere, so `auto` times every variant briefly in alternating rounds on every core at
once, as mining runs them, and keeps the fastest in a small JSON file keyed by the CPU name, a
digest of its feature string and the kernel's source. A new CPU or a changed kernel measures
again; a measurement taken while other programs used the CPU is provisional (`cpu_select`'s
rule) and taken again on the next use, a few times at most.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from miner.kernels import cpu_scrypt, cpu_select
from miner.kernels.tuning_cache import cache_dir, read_entries, write_entries

CHOICE_FILE_NAME = "cpu-scrypt-variant.json"
CHOICES = ("auto",) + tuple(cpu_scrypt.VARIANTS)


def _choice_file() -> Path:
    return cache_dir() / CHOICE_FILE_NAME


def choice_key() -> str:
    """CPU name, a digest of its features and of the kernel's source: what a measurement holds for."""
    name, features = cpu_select.target_cpu()
    digest = hashlib.sha256(features.encode() + cpu_scrypt.source_digest().encode())
    return f"{name}:{digest.hexdigest()[:20]}"


def check_choice(choice: str) -> str:
    """`choice` (auto or a variant name) normalised, or a usage error naming the choices."""
    from miner.errors import InvalidInput
    choice = choice.strip().lower()
    if choice not in CHOICES:
        raise InvalidInput(f"unknown CPU scrypt variant {choice!r} (use {', '.join(CHOICES)})")
    return choice


def _probe_args(k: cpu_scrypt.Kernel, count: int):
    x, v = k.scratch()
    return (np.zeros(19, dtype=np.uint32), np.zeros(8, dtype=np.uint32), 0, count,
            np.zeros(1, dtype=np.int64), x, v)


def compile_variants(names: list[str] | None = None) -> None:
    """Compile (or load) every variant's search into numba's cache, timing nothing."""
    for name in names if names is not None else list(cpu_scrypt.VARIANTS):
        k = cpu_scrypt.kernel(name)
        k.search(*_probe_args(k, 1))


def is_compiled(name: str) -> bool:
    """Whether numba's cache holds variant `name`'s search for this CPU, asked as a call would
    ask (numba's internals: anything unexpected answers False, and the caller compiles)."""
    try:
        from numba import typeof
        fn = cpu_scrypt.kernel(name).search
        args = (np.zeros(19, dtype=np.uint32), np.zeros(8, dtype=np.uint32), 0, 1,
                np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.uint32), np.zeros(1, dtype=np.uint32))
        key = fn._cache._index_key(tuple(typeof(a) for a in args), fn.targetctx.codegen())
        return key in fn._cache._cache_file._load_index()
    except Exception:  # noqa: BLE001  (numba's private cache API moved: take the compile path)
        return False


def measure(names: list[str], seconds: float = 0.3, rounds: int = 3,
            threads: int | None = None) -> dict[str, float]:
    """Hashes/s of each variant on `threads` threads at once (every core by default; each thread
    its own pads, as mining runs them, so the L2 and L3 are shared as they will be): `rounds`
    alternating runs of about `seconds` each, median."""
    from concurrent.futures import ThreadPoolExecutor

    from miner.kernels.cpu import default_threads
    threads = default_threads() if threads is None else threads
    kernels = {n: cpu_scrypt.kernel(n) for n in names}
    args = {n: [_probe_args(k, k.width) for _ in range(threads)] for n, k in kernels.items()}
    counts = {}
    for n, k in kernels.items():  # compile or load, then size a run to about `seconds`
        k.search(*args[n][0])
        t0 = time.perf_counter()
        k.search(*args[n][0])
        per_group = time.perf_counter() - t0
        counts[n] = k.width * max(1, int(seconds / max(per_group, 1e-6)))
    rates: dict[str, list[float]] = {n: [] for n in names}
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(rounds):
            for n, k in kernels.items():
                def run(a, n=n, k=k):
                    return k.search(a[0], a[1], 0, counts[n], a[4], a[5], a[6])
                t0 = time.perf_counter()
                list(pool.map(run, args[n]))
                rates[n].append(threads * counts[n] / (time.perf_counter() - t0))
    return {n: statistics.median(v) for n, v in rates.items()}


def stored_choice() -> str | None:
    """The `auto` variant as stored for this CPU when no measurement is due, else None."""
    entry = read_entries(_choice_file()).get(choice_key())
    if not isinstance(entry, dict) or entry.get("variant") not in cpu_scrypt.VARIANTS:
        return None
    attempts = entry.get("attempts", 1) if isinstance(entry.get("attempts"), int) else 1
    if entry.get("provisional") and attempts < cpu_select.MAX_PROVISIONAL:
        return None
    return entry["variant"]


def choose(preference: str = "auto", remeasure: bool = False,
           before_measure: Callable[[], None] | None = None) -> tuple[str, str]:
    """(variant, why): the variant named, or for `auto` the fastest measured here (measured
    once per CPU and kernel source, then read from the choice file). `remeasure`: measure now
    whatever is stored. `before_measure` runs just before timing, and only then."""
    preference = check_choice(preference)
    if preference != "auto":
        return preference, "chosen"
    key = choice_key()
    data = read_entries(_choice_file())
    entry = data.get(key)
    valid = isinstance(entry, dict) and entry.get("variant") in cpu_scrypt.VARIANTS
    attempts = entry.get("attempts", 1) if valid and isinstance(entry.get("attempts"), int) else 1
    if valid and not remeasure and (not entry.get("provisional") or attempts >= cpu_select.MAX_PROVISIONAL):
        return entry["variant"], "measured earlier on this CPU"
    attempts = attempts + 1 if valid and entry.get("provisional") and not remeasure else 1
    if before_measure is not None:
        before_measure()
    meter = cpu_select.OtherWork()
    rates = measure(list(cpu_scrypt.VARIANTS))
    others = meter.share()
    best = max(rates, key=rates.get)
    entry = {"variant": best, "rates": rates, "date": time.strftime("%Y-%m-%d"), "attempts": attempts}
    if others is not None:
        provisional = others >= cpu_select.OTHERS_BUSY
        entry["others_busy"] = round(others, 2)
    else:
        provisional = cpu_select.load_per_core() >= cpu_select.UNDER_LOAD
    entry["provisional"] = provisional
    data[key] = entry
    write_entries(_choice_file(), data)  # unwritable: measured again next time, nothing lost
    why = "measured now: " + ", ".join(f"{n} {r / 1e3:.1f} kH/s" for n, r in rates.items())
    if provisional and attempts < cpu_select.MAX_PROVISIONAL:
        why += " (the machine was busy: measured again next time)"
    return best, why
