"""`miner net status` as a table: one row per node (alive, mining, height, tip, peers) and
whether every node is on the same tip."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def net_table(status: dict[str, Any]) -> Group:
    table = Table(title=f"{status['folder']}  ({status['preset']}, {status['topology']})", title_justify="left")
    for column, justify in (("node", "left"), ("state", "left"), ("height", "right"), ("tip", "left"),
                            ("peers", "right"), ("p2p port", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in status["nodes"]:
        state = ("mining" if row["mining"] else "up") if row["alive"] else "down"
        if row["error"]:
            state = f"error: {row['error']}"
        table.add_row(row["name"], state, "" if row["height"] is None else f"{row['height']:,}",
                      (row["tip"] or "")[:16], "" if row["peers"] is None else str(row["peers"]),
                      str(row["p2p_port"] or ""))
    verdict = Text("all nodes agree on the tip" if status["agree"] else "nodes disagree on the tip (or are down)",
                   style="green" if status["agree"] else "yellow")
    return Group(table, verdict)
