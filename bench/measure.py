"""What the benches read of a node while they load it: its resident size, and the percentiles
of the answer times they took."""

from __future__ import annotations

import os


def rss_kib(pid: int) -> int:
    """A process's resident size in KiB, from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time a process has used, from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def percentiles(samples: list[float]) -> tuple[float | None, float | None]:
    """(p50, p99) in milliseconds, None when there is no sample."""
    if not samples:
        return None, None
    ordered = sorted(samples)
    return (round(1000 * ordered[len(ordered) // 2], 2),
            round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2))
