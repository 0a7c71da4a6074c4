"""`miner net up|status|down`: a local network of nodes (`miner.localnet`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from miner import localnet
from miner.ui.net_view import net_table


def cmd_net(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    console = Console()
    if args.net_command == "up":
        net = localnet.up(folder, args.nodes, args.miners, args.topology, args.preset, args.threads, args.backend)
        if args.json:
            print(json.dumps({"event": "up", "folder": net.folder,
                              "nodes": [vars(m) for m in net.members]}))
        else:
            print(f"miner net: {len(net.members)} nodes up in {net.folder} ({args.topology}, "
                  f"{args.miners} mining); 'miner net status --dir {args.dir}' to watch, "
                  f"'miner net down --dir {args.dir}' to stop")
        return 0
    if args.net_command == "down":
        killed = localnet.down(folder)
        print("miner net: stopped" + (f" (killed after {localnet.STOP_GRACE:.0f} s: {', '.join(killed)})"
                                       if killed else ""))
        return 0
    if args.json:
        print(json.dumps(localnet.status(folder)))
        return 0
    if not args.watch:
        console.print(net_table(localnet.status(folder)))
        return 0
    with Live(net_table(localnet.status(folder)), console=console, refresh_per_second=4) as live:
        while True:
            time.sleep(args.interval)
            live.update(net_table(localnet.status(folder)))
