"""The small JSON files where measured tunings are kept: CUDA launch shapes, the CPU kernel choice.

A measurement is an optimisation, and the file is the user's to edit or damage: reading gives an
empty dict for anything but a JSON object, writing replaces the file whole (never half-written)
and gives up quietly where the directory cannot be written, so a read-only home never stops mining.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def cache_dir() -> Path:
    """`MINER_CACHE`, else `$XDG_CACHE_HOME/pow-miner`, else ~/.cache/pow-miner.

    The XDG base-directory rules: a user who moves their caches (a small home, a tmpfs, a
    sandbox) moves ours with them; a relative XDG_CACHE_HOME is invalid there and ignored.
    """
    explicit = os.environ.get("MINER_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "pow-miner"


def read_entries(path: Path) -> dict:
    """The file's JSON object; empty when missing, unreadable or not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_entries(path: Path, data: dict) -> bool:
    """Replace the file with `data` in one step; False when it could not be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    except OSError:
        return False
    return True
