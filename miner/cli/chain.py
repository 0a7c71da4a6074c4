"""`miner chain info|verify|tips|show|plot`: read the stored chain, never change it."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from miner.errors import InvalidBlock, InvalidInput, UsageError
from miner.primitives.compact import bits_to_target, difficulty
from miner.primitives.hashes import display_hex

_HASH = re.compile(r"[0-9a-fA-F]{64}")


def _open_chain(path: str, index: bool = True):
    from miner.chain.chain import Chain
    # Reading needs no write access, and changes nothing; `verify` reads every block itself.
    return Chain.open(path, readonly=True, index=index)


def chain_summary(chain) -> dict:
    tip = chain.tip()
    target = bits_to_target(tip.bits)
    recent = chain.times[-11:]
    spacing = (recent[-1] - recent[0]) / (len(recent) - 1) if len(recent) > 1 else None
    p = chain.params
    tips = chain.tips()
    return {
        "path": str(chain.path), "preset": p.name, "rule": p.rule, "spacing": p.spacing,
        "height": chain.height, "tip": tip.hash_hex(), "tip_time": tip.time,
        "bits": f"{tip.bits:08x}", "difficulty": difficulty(target),
        # Hex, as Core's getblockchaininfo gives it: cumulative expected hashes to the tip.
        "chainwork": f"{chain.chainwork:064x}",
        "side_branches": sum(1 for t in tips if t.status != "active"),
        "next_bits": f"{chain.next_bits():08x}", "recent_mean_spacing": spacing,
    }


def _readable(key: str, value) -> str:
    """A value as a person reads it: seconds with their unit, times as dates too."""
    if key in ("spacing", "recent_mean_spacing"):
        return "n/a (fewer than two blocks)" if value is None else f"{value:g} s"
    if key in ("tip_time", "time"):
        return f"{value} ({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(value))} UTC)"
    return str(value)


def parse_block_ref(text: str) -> int | bytes:
    """A height (decimal) or a block hash (64 hex digits, display order as explorers print it)."""
    if _HASH.fullmatch(text):
        return bytes.fromhex(text)[::-1]
    if text.isdigit():
        if len(text) > 19:  # past any height SQLite can hold (2^63 - 1), and past int()'s own limit
            raise InvalidInput(f"no block at height {text[:19]}... ({len(text):,} digits)")
        return int(text)
    if text.startswith("-") and text[1:].isdigit():
        raise UsageError(f"block height {text} must not be negative")
    shown = repr(text) if len(text) <= 80 else f"{text[:40]!r}... ({len(text):,} characters)"
    raise UsageError(f"{shown} is neither a block height nor a 64-digit block hash")


def cmd_chain(args: argparse.Namespace) -> int:
    if args.chain_command == "plot" and args.simulate:
        return _plot_simulation(args)
    if args.chain_command == "plot":
        from miner.ui.plot import check_output_path
        check_output_path(args.out)
    ref = parse_block_ref(args.block) if args.chain_command == "show" else None
    with _open_chain(args.chain, index=args.chain_command != "verify") as chain:
        return _ACTIONS[args.chain_command](chain, args, ref)


def _info(chain, args: argparse.Namespace, _ref) -> int:
    info = chain_summary(chain)
    if chain.damage:
        info["damage"] = chain.damage
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:<20} {_readable(key, value)}")
    if chain.damage:
        print(f"miner: warning: the chain is damaged ({chain.damage}); the height shown "
              f"is where the damage starts; run 'miner chain verify'", file=sys.stderr)
        return 1
    return 0


def _verify(chain, args: argparse.Namespace, _ref) -> int:
    t0 = time.perf_counter()
    try:
        height = chain.verify()
    except InvalidBlock as exc:
        chain.refresh()  # opened without its index: a file that opening refuses is refused as before
        clock = exc.reason == "time-too-new"  # this computer's clock is behind the chain
        if args.json:
            print(json.dumps({"ok": False, "bad_height": exc.height, "error": str(exc), "reason": exc.reason,
                              "clock_behind": clock}))
        elif clock:
            print(f"miner: the chain is ahead of this computer's clock: {exc}; the blocks below it "
                  f"verified; fix the clock, or wait", file=sys.stderr)
        else:
            print(f"miner: chain INVALID: {exc}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    stored = chain.block_count()
    if args.json:
        print(json.dumps({"ok": True, "height": height, "blocks": stored, "seconds": dt}))
    else:
        print(f"chain OK: {stored} blocks verified {took_words(stored, dt)}; active chain to height {height}")
    return 0


# Below this a rate says more about the clock and the start-up than about verifying.
RATE_MIN_SECONDS = 0.1


def took_words(blocks: int, seconds: float) -> str:
    """How long a verification took, with a rate only where the time is long enough to give one:
    31 blocks in 0.0017 s is "in under 0.01 s", not "in 0.00 s (18,297 blocks/s)"."""
    if seconds < 0.01:
        return "in under 0.01 s"
    if seconds < RATE_MIN_SECONDS:
        return f"in {seconds:.2f} s"
    return f"in {seconds:.2f} s ({blocks / seconds:,.0f} blocks/s)"


def _tips(chain, args: argparse.Namespace, _ref) -> int:
    """Rows shaped like Core's getchaintips: height, hash, branchlen, status."""
    rows = [{"height": t.height, "hash": t.hash[::-1].hex(), "branchlen": t.branch_length,
             "status": t.status} for t in chain.tips()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'height':>8}  {'hash':<64}  {'branchlen':>9}  status")
    for r in rows:
        print(f"{r['height']:>8}  {r['hash']:<64}  {r['branchlen']:>9}  {r['status']}")
    return 0


def _show(chain, args: argparse.Namespace, ref) -> int:
    from miner.cli.header import header_report
    block = chain.block(ref) if isinstance(ref, int) else chain.block_by_hash(ref)
    report = header_report(block.header, chain.params.pow_limit)
    node = chain.node(block.hash)
    report["height"] = node.height
    report["active"] = chain.is_active(block.hash)
    if node is not None:
        report["chainwork"] = f"{node.chainwork:064x}"
        if node.status:
            report["invalid"] = node.status
    report["transactions"] = [display_hex(t.txid) for t in block.txs]
    if node.height == 0 and not report["meets_target"]:
        # The local presets' genesis is made, not mined (no block can link to a parent it lacks):
        # its proof of work was never the point, and nothing is wrong with the chain.
        report.pop("pow_error", None)
        report["genesis"] = ("made, not mined: a new chain's first block carries the preset's "
                             "starting bits, and its proof of work is never checked")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        if key == "transactions":
            print(f"{key:<14} {len(value)}")
            for txid in value:
                print(f"  {txid}")
        elif key != "time_utc":
            print(f"{key:<14} {_readable(key, value)}")
    return 0


def _plot(chain, args: argparse.Namespace, _ref) -> int:
    """The stored chain's spacing and difficulty: every block, or with --blocks N the last N
    (on a long chain the recent blocks are what a person looks at; a chain shorter than N is
    drawn whole)."""
    from miner.ui.plot import plot_chains
    times, bits = chain.times, chain.bits
    first = 0 if args.blocks is None else max(0, len(times) - 1 - args.blocks)
    which = "" if first == 0 else f", blocks {first + 1} to {len(times) - 1}"
    path = plot_chains(args.out, {chain.params.name: (times[first:], bits[first:])},
                       chain.params.spacing, f"{chain.path.name}: {chain.params.rule} rule{which}",
                       first=first)
    print(f"wrote {path}")
    return 0


_ACTIONS = {"info": _info, "verify": _verify, "tips": _tips, "show": _show, "plot": _plot}


def _plot_simulation(args: argparse.Namespace) -> int:
    from miner.consensus.params import preset
    from miner.consensus.simulate import simulate
    from miner.ui.plot import plot_chains
    args.blocks = 300 if args.blocks is None else args.blocks
    jump = args.blocks // 3
    series = {}
    spacing = 0
    for name in ("local", "local-windowed"):
        params = preset(name, 1_700_000_000)
        start_rate = 2**26 / params.spacing  # a CPU kernel: local-windowed's start, local ramps up to it
        sim = simulate(params, args.blocks, start_rate, jump_at=jump, jump_factor=10.0)
        series[f"{params.rule} ({name})"] = (sim.times, sim.bits)
        spacing = params.spacing
    path = plot_chains(args.out, series, spacing,
                       f"simulated 10x hash-rate jump at height {jump}", marker=jump)
    print(f"wrote {path}")
    return 0
