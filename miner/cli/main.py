"""The `miner` command line.

Every failure the user can fix prints one line, `miner: error: ...`, and exits non-zero (2 for
usage errors); tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Sequence

from miner import __version__
from miner.backends.base import MAX_THREADS
from miner.cli.arg_types import (
    chain_name,
    non_negative_int,
    positive_float,
    positive_int,
    positive_seconds,
    retries,
    stall_factor,
)
from miner.cli.interrupts import install_process_policy
from miner.consensus.params import PRESETS
from miner.errors import InvalidInput, MinerError, UsageError
from miner.node.limits import MAX_PEERS, STRATUM_MINERS
from miner.stopping import ignore_stop_signals

DEFAULT_CHAIN = "miner-chain.sqlite"
CHAIN_HELP = f"chain file (default: $MINER_CHAIN, else {DEFAULT_CHAIN})"
MAX_BLOCKS = 1_000_000
# Every preset by name, from the code that defines them, so help never omits one.
PRESET_NAMES = ", ".join(PRESETS)


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help, wrapped at spaces only: a file name such as miner-chain.sqlite or a
    preset such as local-windowed is never broken at its hyphen across two lines."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False) or [""]

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent,
                             subsequent_indent=indent, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _metrics_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (0 picks a free port)")
    parser.add_argument("--metrics-bind", default="127.0.0.1", help="address for metrics (default 127.0.0.1)")


def _cpu_kernel_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu-kernel", default="auto", type=str.lower, choices=("auto", "simd", "sha"),
                        help="CPU backend kernel: simd (AVX-512/AVX2 lanes), sha (SHA extensions), or "
                             "auto, the faster here, measured once per CPU (default auto)")


def _lookup_gap_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lookup-gap", type=int, default=1, choices=(1, 2, 4, 8),
                        help="scrypt on a GPU: keep every g-th scratchpad row and recompute the rest "
                             "(memory / g; python -m miner.bench.scrypt_model weighs it; default 1)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="miner", description="Bitcoin-exact SHA-256d proof-of-work miner.")
    p.add_argument("--version", action="version", version=f"miner {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    m = sub.add_parser("mine", help="mine blocks on the local chain")
    m.add_argument("--blocks", type=positive_int(MAX_BLOCKS), default=None,
                   help="blocks to mine (default 5; at a pool: until stopped)")
    m.add_argument("--backend", default="auto",
                   help="auto, ref, cpu, cuda, cuda:N, or a comma-separated list (default auto)")
    m.add_argument("--threads", type=positive_int(MAX_THREADS), default=None,
                   help="CPU backend threads (default: all cores)")
    _cpu_kernel_option(m)
    _lookup_gap_option(m)
    m.add_argument("--chain", type=chain_name, default=os.environ.get("MINER_CHAIN") or DEFAULT_CHAIN,
                   help=f"chain file (default: $MINER_CHAIN, else {DEFAULT_CHAIN}; created if missing)")
    m.add_argument("--preset", default=None,
                   help=f"preset for a new chain: {PRESET_NAMES} (default local); an existing chain "
                        "made with another is refused")
    m.add_argument("--wait-for-kernels", action="store_true",
                   help="start mining once every backend's kernel is compiled, all together "
                        "(default: at once, each compiled backend joining when ready)")
    m.add_argument("--unit-seconds", type=float, default=0.25,
                   help="target duration of one work unit (default 0.25)")
    m.add_argument("--url", action="append", default=None,
                   help="mine a node instead of a chain file: http://user:password@host:port of a "
                        "'miner node' or Bitcoin Core (getblocktemplate, submitblock), or a Stratum "
                        "pool, stratum+tcp://user.worker:password@host:port (repeat for failover, "
                        "in order)")
    m.add_argument("--shares", type=positive_int(MAX_BLOCKS), default=None,
                   help="at a pool: stop after this many accepted shares")
    m.add_argument("--pool-retry", type=positive_seconds, default=30.0,
                   help="at a backup pool: seconds between looks at the ones before it (default 30)")
    m.add_argument("--pool-stall", type=stall_factor, default=10.0,
                   help="at a pool: with no new job and no accepted share for this many expected share "
                        "times (at least a minute), the pool is stalled: subscribe again, at the next "
                        "--url if any (default 10; 0: never)")
    m.add_argument("--suggest-difficulty", type=positive_float, default=None, metavar="D",
                   help="at a pool: ask for share difficulty D (mining.suggest_difficulty, as cgminer's "
                        "--suggest-diff) before authorizing; pools that honour it (this project's node, "
                        "public-pool, ckpool within its minimum) set it, others ignore it")
    m.add_argument("--retries", type=retries, default=-1,
                   help="with --url: failed tries in a row (at a pool: rounds over every --url) before "
                        "giving up while a node or pool cannot be reached (default -1: never give up)")
    m.add_argument("--rpc-cookie-file", default=None,
                   help="with --url: read the credentials from the node's cookie file")
    m.add_argument("--payout-address", default=None,
                   help="with --url: address the coinbase pays (any network)")
    m.add_argument("--pow", choices=("sha256d", "scrypt"), default=None,
                   help="with --url: the node's or pool's proof of work (default sha256d; a local "
                        "chain's is its preset's)")
    m.add_argument("--payout-script", default=None,
                   help="with --url: output script (hex) the coinbase pays (default OP_TRUE)")
    _metrics_options(m)
    out = m.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="only a summary at the end")
    out.add_argument("--json", action="store_true", help="one JSON object per event")

    n = sub.add_parser("node", help="serve the chain over Bitcoin Core's JSON-RPC (getblocktemplate, "
                                    "submitblock, ...) until stopped")
    n.add_argument("--chain", type=chain_name, default=os.environ.get("MINER_CHAIN") or DEFAULT_CHAIN,
                   help=f"chain file to own (default: $MINER_CHAIN, else {DEFAULT_CHAIN}; created if missing)")
    n.add_argument("--preset", default=None, help=f"preset for a new chain: {PRESET_NAMES} (default local)")
    n.add_argument("--rpc-bind", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs --rpc-user)")
    n.add_argument("--rpc-port", type=int, default=18443, help="port (default 18443; 0 picks a free one)")
    n.add_argument("--rpc-user", default=None, help="user name (instead of the cookie file)")
    n.add_argument("--rpc-password", default=None, help="password for --rpc-user")
    n.add_argument("--rpc-cookie-file", default=None,
                   help="where to write the cookie (default NAME.cookie beside the chain file NAME)")
    n.add_argument("--max-connections", type=positive_int(100_000), default=256,
                   help="JSON-RPC connections at most (default 256; an eighth kept for clients with credentials). "
                        "Each face has its own slots, all lowered alike to fit the descriptor limit")
    n.add_argument("--rpc-timeout", type=positive_seconds, default=30.0,
                   help="seconds a connection may wait idle between requests, and to send a request's "
                        "body or take a reply (Core's -rpcservertimeout; default 30); a new connection "
                        "or a started request has at most 10 for its header")
    n.add_argument("--rpc-rate", type=positive_int(1_000_000), default=1000,
                   help="calls a second per connection before it is slowed down (default 1000)")
    n.add_argument("--stratum-port", type=int, default=None,
                   help="also serve Stratum v1 for miner programs on this port (0 picks a free one)")
    n.add_argument("--stratum-bind", default="127.0.0.1", help="address for Stratum (default 127.0.0.1)")
    n.add_argument("--stratum-difficulty", type=positive_float, default=1.0,
                   help="a new miner's share difficulty before vardiff adjusts it (default 1; never "
                        "above the network's)")
    n.add_argument("--stratum-min-difficulty", type=positive_float, default=1e-9,
                   help="the lowest share difficulty vardiff sets (default 1e-9)")
    n.add_argument("--stratum-max-difficulty", type=positive_float, default=1e12,
                   help="the highest share difficulty vardiff sets (default 1e12; the network's caps it too)")
    n.add_argument("--stratum-shares-per-minute", type=positive_float, default=18.0,
                   help="the share rate vardiff aims at for each miner (default 18, as ckpool)")
    n.add_argument("--stratum-retarget-seconds", type=positive_seconds, default=240.0,
                   help="vardiff decides again after this many seconds or 72 shares, whichever comes "
                        "first (default 240, as ckpool)")
    n.add_argument("--stratum-extranonce2-size", type=positive_int(16), default=4,
                   help="bytes of the coinbase each miner rolls itself (mining.subscribe's extranonce2 "
                        "size, 1 to 16; default 4: 2^32 coinbases per job for each connection)")
    n.add_argument("--stratum-idle-timeout", type=positive_seconds, default=600.0,
                   help="seconds an authorized miner may send nothing before it is dropped (default 600, "
                        "0.1 to 86400; a miner must authorize within the --rpc-timeout, at most 10 s)")
    n.add_argument("--stratum-max-miners", type=positive_int(100_000), default=STRATUM_MINERS,
                   help="authorized Stratum connections at most (default 256); when all are taken a new miner "
                        "pushes out one with no share accepted in the last hour, else is told the server is full")
    n.add_argument("--stratum-payout", default=None,
                   help="address the Stratum blocks' coinbase pays (default OP_TRUE, anyone can spend)")
    n.add_argument("--listen", default=None, metavar="[HOST:]PORT",
                   help="accept peers over Bitcoin's peer-to-peer protocol here (HOST default 127.0.0.1; "
                        "PORT 0 picks a free one)")
    n.add_argument("--connect", action="append", default=[], metavar="HOST:PORT",
                   help="keep a peer connection to this node (repeatable; reconnects with back-off)")
    n.add_argument("--max-peers", type=positive_int(100_000), default=MAX_PEERS,
                   help="peer connections at most, as Core's -maxconnections (default 125): 11 of them are "
                        "outbound slots, the rest inbound; --connect peers never take an inbound slot")
    n.add_argument("--metrics-top-workers", type=positive_int(100_000), default=100,
                   help="Stratum workers shown one by one on the metrics page, the most work first "
                        "(default 100); the rest are summed under worker=\"*other*\"")
    _metrics_options(n)
    n.add_argument("--backend", default="auto", help="backends generatetoaddress mines with (default auto)")
    n.add_argument("--threads", type=positive_int(MAX_THREADS), default=None, help="CPU backend threads")
    _cpu_kernel_option(n)
    n.add_argument("--json", action="store_true", help="one JSON object per event")

    net = sub.add_parser("net", help="a network of nodes on 127.0.0.1: up, status, down")
    nsub = net.add_subparsers(dest="net_command", required=True)
    up = nsub.add_parser("up", help="start N nodes wired in a ring or mesh, K of them mining")
    up.add_argument("nodes", type=positive_int(64), help="how many nodes")
    up.add_argument("--miners", type=int, default=1, help="how many of them a miner mines (default 1)")
    up.add_argument("--topology", choices=("ring", "mesh"), default="ring", help="default ring")
    up.add_argument("--preset", default="local",
                    help=f"chain preset: {PRESET_NAMES} (default local: blocks every few seconds)")
    up.add_argument("--threads", type=positive_int(MAX_THREADS), default=1, help="CPU threads per miner (default 1)")
    up.add_argument("--backend", default="auto", help="backends the miners use (default auto)")
    st = nsub.add_parser("status", help="each node's height, tip and peers, and whether all agree")
    st.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    st.add_argument("--interval", type=positive_seconds, default=1.0, help="with --watch: seconds between looks")
    nsub.add_parser("down", help="stop the miners, then the nodes (chains and logs are kept)")
    for sp in (up, st, *[a for n, a in nsub.choices.items() if n == "down"]):
        sp.add_argument("--dir", default="miner-net", help="the network's folder (default ./miner-net)")
        sp.add_argument("--json", action="store_true", help="JSON instead of text")

    c = sub.add_parser("chain", help="inspect the stored chain")
    csub = c.add_subparsers(dest="chain_command", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    for name, text in (("info", "summary of the chain"),
                       ("verify", "re-validate every stored block on every branch"),
                       ("tips", "every branch's tip, like Bitcoin Core's getchaintips")):
        a = csub.add_parser(name, help=text)
        a.add_argument("--chain", type=chain_name, default=os.environ.get("MINER_CHAIN") or DEFAULT_CHAIN,
                       help=CHAIN_HELP)
        a.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    s = csub.add_parser("show", help="one block, by height on the active chain or by hash")
    s.add_argument("block", metavar="HEIGHT|HASH", help="a height, or a block hash (64 hex digits)")
    s.add_argument("--chain", type=chain_name, default=os.environ.get("MINER_CHAIN") or DEFAULT_CHAIN,
                       help=CHAIN_HELP)
    s.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    pl = csub.add_parser("plot", help="block spacing and difficulty as PNG, SVG or PDF")
    pl.add_argument("out", help="file to write: .png, .svg or .pdf")
    pl.add_argument("--chain", type=chain_name, default=os.environ.get("MINER_CHAIN") or DEFAULT_CHAIN,
                       help=CHAIN_HELP)
    pl.add_argument("--simulate", action="store_true",
                    help="instead of the stored chain, simulate both retarget rules through a "
                         "10x hash-rate jump")
    pl.add_argument("--blocks", type=positive_int(100_000), default=None,
                    help="the stored chain's last N blocks (default: all of them); with --simulate, "
                         "blocks to simulate (default 300)")

    b = sub.add_parser("bench", help="hash rate per backend: median/min/max of timed runs")
    b.add_argument("--backend", default="ref,cpu",
                   help="backends to measure (default ref,cpu; cuda where present)")
    b.add_argument("--threads", default=None,
                   help="CPU thread counts to scale over, e.g. 1,2 (default: 1 and all cores)")
    b.add_argument("--cpu-kernel", default=None, type=str.lower,
                   choices=("auto", "simd", "sha", "all"),
                   help="CPU kernels to measure: every one this CPU runs (all, the default), "
                        "auto (measures the choice miner mine keeps again and stores it), or one by name")
    b.add_argument("--duration", type=float, default=2.0,
                   help="seconds per timed run, above 0 and at most 600 (default 2)")
    b.add_argument("--runs", type=positive_int(100), default=5, help="timed runs (default 5)")
    b.add_argument("--launch", default="256x16,256x64,256x256",
                   help="CUDA launch shapes BLOCKxNONCES_PER_THREAD, 'all' or 'tuned' "
                        "(default 256x16,256x64,256x256)")
    b.add_argument("--switches", type=non_negative_int, default=5,
                   help="job switches timed across all the backends together (default 5, 0 skips)")
    b.add_argument("--unit-seconds", type=float, default=0.25,
                   help="work unit length for the job-switch test, as in mine, above 0 and at most 10 "
                        "seconds (default 0.25)")
    b.add_argument("--pow", choices=("sha256d", "scrypt"), default="sha256d",
                   help="the proof of work to measure (default sha256d)")
    _lookup_gap_option(b)
    b.add_argument("--static", action="store_true",
                   help="print the static model of each kernel's limit instead: for cpu, "
                        "instructions per nonce/hash by port class, the port-bound rate of one core "
                        "and the measured one; for cuda, the SASS report (needs nvcc)")
    b.add_argument("--json", action="store_true", help="one JSON document instead of the table")

    cp = sub.add_parser("compare", help="every backend on the same job and range, hits cross-checked")
    cp.add_argument("--backend", default=None, help="backends (default: ref, cpu and every GPU present)")
    cp.add_argument("--count", type=positive_int(2**32 - 1), default=None,
                    help="nonces of the easy-target job every backend searches for the hit check "
                         "(default 2^21; 2^11 for scrypt)")
    cp.add_argument("--pow", choices=("sha256d", "scrypt"), default="sha256d",
                    help="the proof of work to compare (default sha256d)")
    cp.add_argument("--seconds", type=float, default=0.5,
                    help="seconds of each timed speed run, on a hard target, above 0 and at most 60 "
                         "(default 0.5)")
    cp.add_argument("--runs", type=positive_int(50), default=3,
                    help="timed speed runs per backend; the median is reported (default 3)")
    cp.add_argument("--plot", default=None, help="write a bar chart here (.png, .svg or .pdf)")
    _cpu_kernel_option(cp)
    _lookup_gap_option(cp)
    cp.add_argument("--json", action="store_true", help="one JSON document instead of the table")

    h = sub.add_parser("header", help="decode an 80-byte block header")
    h.add_argument("hex", help="160 hex digits, a file holding them (or the 80 raw bytes), or - for "
                               "standard input")
    limit = h.add_mutually_exclusive_group()
    limit.add_argument("--preset", default=None,
                       help=f"judge proof of work against this chain preset's limit: {PRESET_NAMES} "
                            "(default: Bitcoin mainnet's)")
    limit.add_argument("--pow-limit", default=None,
                       help="judge proof of work against this limit: compact bits or a 64-digit target")
    h.add_argument("--pow", choices=("sha256d", "scrypt"), default=None,
                   help="the proof-of-work hash to judge by (default sha256d, or the --preset's)")
    h.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    return p


# Each command's body lives beside what it drives, imported only when that command runs, so
# `miner header` never loads numba or aiohttp.
COMMANDS = {
    "mine": "miner.cli.mine:cmd_mine",
    "node": "miner.cli.node:cmd_node",
    "chain": "miner.cli.chain:cmd_chain",
    "header": "miner.cli.header:cmd_header",
    "net": "miner.cli.net:cmd_net",
    "bench": "miner.bench.cli_commands:cmd_bench",
    "compare": "miner.bench.cli_commands:cmd_compare",
}


def run_command(args: argparse.Namespace) -> int:
    module, _, name = COMMANDS[args.command].partition(":")
    return getattr(importlib.import_module(module), name)(args)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time, so log lines go through the live view's
    redirect (printed above the panel) instead of tearing through it."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _configure_logging(verbose: int) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), handlers=[handler],
                        force=True)


MAX_ERROR_CHARS = 300


def exit_code(exc: MinerError) -> int:
    """2 when the input is wrong (the command line, a value, a path), 1 when the chain file, a
    node or the machine is: the one place an exception becomes an exit status."""
    return 2 if isinstance(exc, InvalidInput) else 1


def one_line(message: str) -> str:
    """An error as one short line: a message that echoes a huge or multi-line argument back is
    cut, so a pasted megabyte never becomes a megabyte of error output."""
    flat = " ".join(message.split())
    if len(flat) <= MAX_ERROR_CHARS:
        return flat
    return f"{flat[:MAX_ERROR_CHARS - 60]}... ({len(flat):,} characters in all)"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _configure_logging(args.verbose)
        return run_command(args)
    except MinerError as exc:
        print(f"miner: error: {one_line(str(exc))}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        sys.stderr.close()
        return 0


def entry() -> None:
    install_process_policy()
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        code = main()
    finally:
        # Interpreter shutdown puts SIG_DFL back for every signal with a Python handler, so a
        # second Ctrl-C arriving after the summary would kill the process by SIGINT; ignored
        # signals stay ignored.
        ignore_stop_signals()
    sys.exit(code)


if __name__ == "__main__":
    entry()
