"""The soak's end: every acknowledged block looked up on every node, every chain file verified,
and the figures as one table (markdown, so a run's table goes into docs/benchmarks/soak.md as printed) or one
JSON object.

An acknowledged block must be stored on the node that acknowledged it. On the other nodes it must
be stored too, unless it lost a race: a block that ended on a side branch (mined on a tip another
node had already replaced, or on the losing side of a partition) is not fetched by nodes whose
own branch has at least as much work, as Bitcoin Core does not fetch one either; such blocks
are counted as `stale`, not blamed. A block on the agreed active chain is on every node by
definition of agreement, and is checked all the same.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from miner.bench.soak_cluster import Cluster, chain_verify
from miner.bench.soak_watch import RPC_DOWN, Watch

from miner.localnet import RpcRefused


def final_blocks(cluster: Cluster, watch: Watch) -> dict:
    """Each acknowledged block on each node: counts, and violations for any missing."""
    members = cluster.net.members
    counts = Counter()
    sources = Counter()
    for ack in list(watch.acks.values()):
        sources[ack.source.rstrip("0123456789")] += 1
        found = {}
        for member in members:
            try:
                header = cluster.rpc(member, "getblockheader", ack.hash, timeout=10.0)
                found[member.name] = "active" if header.get("confirmations", -1) > 0 else "side"
            except RpcRefused:
                found[member.name] = None
            except RPC_DOWN as exc:
                watch.violate("rpc", f"{member.name}: getblockheader failed at the end: {exc}")
                found[member.name] = None
        if found[ack.node] is None:
            if not ack.stored:  # not already blamed while running
                watch.violate("lost-block", f"{ack.hash} acknowledged to {ack.source} by {ack.node} "
                                            f"is not stored there")
            counts["lost"] += 1
            continue
        counts["stored"] += 1
        if all(found.values()):
            counts["everywhere"] += 1
        elif "active" in found.values():
            watch.violate("not-replicated", f"{ack.hash} is on the active chain of some nodes but missing "
                                            f"on {[n for n, v in found.items() if v is None]}")
        else:
            counts["stale"] += 1
        counts["active"] += "active" in found.values()
    return {"acknowledged": len(watch.acks), "by_source": dict(sources), "stored": counts["stored"],
            "on_every_node": counts["everywhere"], "stale_elsewhere": counts["stale"],
            "on_active_chain": counts["active"], "lost": counts["lost"]}


def verify_chains(cluster: Cluster, watch: Watch) -> dict:
    """`miner chain verify` on every node's file (the nodes are stopped)."""
    results = {}
    for member in cluster.net.members:
        ok, line = chain_verify(Path(member.folder) / "chain.sqlite")
        results[member.name] = {"ok": ok, "line": line}
        if not ok:
            watch.violate("verify", f"{member.name}: {line}")
    return results


def _late(faults: dict) -> str:
    """Convergences past the limit, each marked when it was a tie (excused, see soak_faults)."""
    return ", ".join(f"{x['s']} s" + (" (a tie)" if x["tie"] else "") for x in faults["late"]) or "none"


def table(result: dict) -> str:
    """The run's figures as a markdown table."""
    b, f, w = result["blocks"], result["faults"], result["watch"]
    sources = ", ".join(f"{k} {v}" for k, v in sorted(b["by_source"].items()))
    kinds = ", ".join(f"{k} {v}" for k, v in f["by_kind"].items()) or "none"
    rss = ", ".join(f"{k} {v / 1024:.0f}" for k, v in sorted(w["rss_kib"].items()))
    idle, idle_who = w["longest_idle"]
    verified = sum(1 for v in result["verify"].values() if v["ok"])
    rows = [
        ("blocks acknowledged", f"{b['acknowledged']}", sources),
        ("stored on the acknowledging node", f"{b['stored']} / {b['acknowledged']}", f"lost {b['lost']}"),
        ("stored on every node", f"{b['on_every_node']}",
         f"{b['stale_elsewhere']} stale (side branch, only where mined); {b['on_active_chain']} on the active chain"),
        ("blocks refused or unanswered", f"{sum(w['verdicts'].values())}",
         ", ".join(f"{k} {v}" for k, v in w["verdicts"].most_common()) or "-"),
        ("generatetoaddress 1", f"{w['generate'].get('calls', 0)} calls",
         f"{w['generate'].get('blocks', 0)} blocks, {w['generate'].get('failed', 0)} failed (node killed mid-call)"),
        ("pool shares (our clients)", f"{w['shares'].get('accepted', 0)} accepted",
         f"{w['shares'].get('refused', 0)} refused"),
        ("faults injected", f"{f['total']}", kinds),
        ("convergence after heals", f"{f['converge_count']}",
         f"max {f['converge_max_s']} s, median {f['converge_median_s']} s (limit 10 s; the last after "
         f"the miners stopped; {f['partitions_diverged']} partitions had diverged; {f['ties']} went through a tie "
         f"of equal work; past 10 s: {_late(f)})"),
        ("longest pool-miner idle", f"{idle:.1f} s",
         f"{idle_who or '-'} (limit 5 s; {w['idle_samples']} samples of a miner due to hash)"),
        ("node RSS max (MiB)", f"{max(w['rss_kib'].values(), default=0) / 1024:.0f}",
         f"{rss} (limit {result['rss_limit_mib']:.0f})"),
        ("chains verified", f"{verified} / {len(result['verify'])}", "miner chain verify, nodes stopped"),
        ("tracebacks / node errors", f"{result['errors']}", "in every process's output"),
        ("processes left", f"{len(result['leftovers'])}", ", ".join(result["leftovers"]) or "-"),
        ("violations", f"{len(result['violations'])}", "; ".join(k for k, _ in result["violations"]) or "-"),
    ]
    if result.get("peers"):
        rows.insert(5, ("real miners at the pool", ", ".join(result["peers"]), "accepted shares, blocks"))
    lines = ["| check | result | detail |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b_} | {c} |" for a, b_, c in rows]
    return "\n".join(lines)
