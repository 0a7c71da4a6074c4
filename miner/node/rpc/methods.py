"""Every RPC method `miner node` serves, with Bitcoin Core's names, parameters, result shapes and
errors: importing this module registers them all.

Methods read the chain on the chain thread and answer what Core would answer for the same chain.
Where this chain has less than Core (no coin set, so no fees; no peers), the field is kept with
the value that is true here (fee 0).
"""

from __future__ import annotations

from miner.node.rpc import blockchain, control, mining, network, transactions  # noqa: F401  (they register)
from miner.node.rpc.registry import METHODS, Context, dispatch

__all__ = ["METHODS", "Context", "dispatch"]
