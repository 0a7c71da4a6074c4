"""The product's source files by module name, for the tests that read the source itself
(`test_layers`: the import graph; `test_rooms`: what each room may touch)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where each top-level folder installs (pyproject's package-dir): kernels/ and bench/ are
# miner.kernels and miner.bench.
SOURCES = {"miner": ROOT / "miner", "miner.kernels": ROOT / "kernels", "miner.bench": ROOT / "bench"}


def modules() -> dict[str, Path]:
    out = {}
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([prefix, *parts])] = path
    return out
