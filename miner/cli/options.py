"""Options that more than one command takes, checked without importing what runs them (`miner
mine` must not load the node's server stack to read a port number)."""

from __future__ import annotations

import argparse

from miner.errors import UsageError


def metrics_options(args: argparse.Namespace) -> tuple[str, int] | None:
    """(host, port) of the Prometheus endpoint, or None when --metrics-port is not given."""
    if args.metrics_port is None:
        return None
    if not 0 <= args.metrics_port <= 65535:
        raise UsageError(f"--metrics-port must be 0 to 65535, got {args.metrics_port}")
    return args.metrics_bind, args.metrics_port
