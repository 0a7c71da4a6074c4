"""`miner mine`: check the chain and arguments, configure a run (`miner.mining.run.MiningRun`) and
start it; it always ends with a summary.

Everything that can be wrong with the arguments or the chain file is found before anything
starts: a damaged chain, a folder that cannot take a new file, a clock the chain is ahead of.
Hashing begins at once; kernels that need a first-run compile join when they are ready
(`miner.mining.startup`). Ctrl-C, SIGTERM and SIGHUP end the run the same way, with the summary (the
process's policy, `interrupts`); a second signal during shutdown is ignored so the summary is
still printed. A block that cannot be
stored (a full disk) ends the run with the summary and one error line, and the chain unchanged.
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from pathlib import Path

from miner.backends.base import Backend
from miner.backends.registry import make_backends
from miner.chain.chain import Chain
from miner.chain.clock import check_clock
from miner.chain.files import check_chain_path, check_creatable
from miner.chain.lock import ChainLock
from miner.cli.main import DEFAULT_CHAIN
from miner.cli.options import metrics_options
from miner.consensus.params import check_same_preset, preset, with_genesis_time
from miner.errors import UsageError
from miner.mining.run import MiningRun, RunOptions
from miner.mining.sources.local import LocalChainSource
from miner.mining.sources.pool_url import is_pool_url
from miner.node.rpc.auth import cookie_path
from miner.primitives.address import parse_script_hex, script_for_address
from miner.ui.reporting import make_reporter

# Imported where used: the node's and the pool's clients (only one kind of run needs each).


def cmd_mine(args: argparse.Namespace) -> int:
    if not args.unit_seconds > 0:
        raise UsageError("--unit-seconds must be positive")
    metrics = metrics_options(args)  # a bad port is said before anything starts
    if args.pow and not args.url:
        raise UsageError("--pow is for --url; a local chain's proof of work is its preset's")
    if args.url:
        pools = [is_pool_url(url) for url in args.url]
        if any(pools):
            if not all(pools):
                raise UsageError("--url: give Stratum pools (stratum+tcp://) or one node (http://), not both")
            return _mine_pool(args, metrics)
        if len(args.url) > 1:
            raise UsageError("--url: one node (http://) at a time; failover is for Stratum pools")
    _refuse_pool_options(args)
    options = _options(args, metrics, blocks=args.blocks or 5)
    return _mine_node(args, options) if args.url else _mine_local(args, options)


def _options(args: argparse.Namespace, metrics: tuple[str, int] | None, blocks: int, shares: int = 0) -> RunOptions:
    return RunOptions(blocks=blocks, shares=shares, unit_seconds=args.unit_seconds,
                      wait_for_kernels=args.wait_for_kernels, metrics=metrics)


def _backends(args: argparse.Namespace, pow: str) -> list[Backend]:
    return make_backends(args.backend, threads=args.threads, cpu_kernel=args.cpu_kernel, pow=pow,
                         lookup_gap=args.lookup_gap)


def _mine_local(args: argparse.Namespace, options: RunOptions) -> int:
    """The local chain file: opened (or created) under its lock, which the run releases."""
    params = preset(args.preset or "local", int(time.time()))  # an unknown preset fails before any compile
    path = Path(args.chain)
    check_chain_path(path, must_exist=False)  # a name no file system takes, say, before any I/O
    with ExitStack() as held:
        lock = ChainLock(path, exclusive=False)
        chain = None
        if path.exists() and (not path.is_file() or path.stat().st_size > 0):
            held.callback(lock.acquire().release)  # a chain a node owns is mined through the node (--url)
            chain = held.enter_context(Chain.open(path))  # refuses a damaged or read-only chain before the compile
            if args.preset is not None:
                check_same_preset(chain.params, args.preset, chain.path)
            check_clock(chain, int(time.time()))
        else:
            check_creatable(path)
            held.callback(lock.acquire().release)
        backends = _backends(args, chain.params.pow if chain is not None else params.pow)
        reporter = make_reporter(args.json, args.quiet)
        # Mining starts at once (kernels compile in the background, `mining/startup.py`), so a
        # new chain's genesis time "now" is when hashing begins.
        if chain is None:
            chain = held.enter_context(Chain.open_or_create(path, with_genesis_time(params, int(time.time()))))
        describe = {"path": str(chain.path), "height": chain.height, "preset": chain.params.name,
                    "rule": chain.params.rule, "spacing": chain.params.spacing}
        release = held.pop_all().close  # from here on the run releases the chain and its lock
    return MiningRun(LocalChainSource(chain), backends, reporter, describe, options, release=release).run()


def _refuse_pool_options(args: argparse.Namespace) -> None:
    for option, given in (("--shares", args.shares), ("--suggest-difficulty", args.suggest_difficulty)):
        if given:
            raise UsageError(f"{option} is for mining at a pool (--url stratum+tcp://...)")


def _payout_script(args: argparse.Namespace) -> bytes:
    if args.payout_script and args.payout_address:
        raise UsageError("give --payout-script or --payout-address, not both")
    if args.payout_script:
        return parse_script_hex(args.payout_script)
    if args.payout_address:
        return script_for_address(args.payout_address)
    return b"\x51"  # OP_TRUE: anyone can spend it, as on the local chain


def _mine_node(args: argparse.Namespace, options: RunOptions) -> int:
    """`miner mine --url`: getblocktemplate work from a node, solved blocks to its submitblock."""
    from miner.mining.rpc_client import RpcClient
    from miner.mining.sources.gbt import TemplateSource

    cookie, looked_in = args.rpc_cookie_file, []
    if cookie is None and "@" not in args.url[0].split("://", 1)[-1].split("/", 1)[0]:
        # as bitcoin-cli finds its data folder's cookie
        looked_in = cookie_places(Path(args.chain))
        cookie = next((place for place in looked_in if place.is_file()), None)
    client = RpcClient(args.url[0], cookie_file=cookie, looked_in=looked_in)
    pow = args.pow or "sha256d"
    reporter = make_reporter(args.json, args.quiet)
    source = TemplateSource(client, _payout_script(args), pow=pow, retries=args.retries, on_event=reporter.pool)
    first = source.fetch()  # a bad template (or a node away past --retries) fails before the compile
    backends = _backends(args, pow)
    describe = {"path": client.display_url, "height": first.height - 1, "preset": "node", "rule": "node",
                "spacing": 0, "detail": f"a node's chain, tip {first.height - 1}"}  # the URL is said once, as the place
    return MiningRun(source, backends, reporter, describe, options).run()


def cookie_places(chain: Path) -> list[Path]:
    """Where a local `miner node` would have written its cookie (`auth.cookie_path`: NAME.cookie
    beside the chain NAME), in the order they are tried: that of the chain this command names
    (--chain, else $MINER_CHAIN, else the default), then that of the default chain in the current
    folder, which a node started here with no --chain writes (a $MINER_CHAIN set for other work
    should not hide that one)."""
    places = []
    for path in (chain, Path(DEFAULT_CHAIN)):
        place = cookie_path(path)
        if place not in places:
            places.append(place)
    return places


def _mine_pool(args: argparse.Namespace, metrics: tuple[str, int] | None) -> int:
    """`miner mine --url stratum+tcp://...`: a pool's jobs, shares to its mining.submit, with
    failover over the pools in the order given."""
    from miner.mining.metrics import PoolStatus
    from miner.mining.sources.pool_url import PoolUrl
    from miner.mining.sources.stratum import StratumSource

    if args.payout_address or args.payout_script or args.rpc_cookie_file:
        raise UsageError("a pool builds the coinbase and checks its own workers: "
                         "--payout-address, --payout-script and --rpc-cookie-file are for http:// nodes")
    urls = [PoolUrl.parse(url) for url in args.url]
    reporter = make_reporter(args.json, args.quiet)
    status = PoolStatus(reporter.pool)
    pow = args.pow or "sha256d"
    source = StratumSource(urls, on_event=status.update, retry_primary=args.pool_retry, pow=pow,
                           retries=args.retries, stall_factor=args.pool_stall,
                           suggest_difficulty=args.suggest_difficulty)
    first = source.open()  # no pool reachable and no retry left: said before the compile
    try:
        backends = _backends(args, pow)
    except BaseException:
        source.stop()
        raise
    describe = {"path": first.display, "height": 0, "preset": "pool", "rule": "pool", "spacing": 0,
                "detail": "Stratum pool" + (f", failover to {len(urls) - 1} more" if len(urls) > 1 else "")}
    run = MiningRun(source, backends, reporter, describe, _options(args, metrics, args.blocks or 0, args.shares or 0),
                    release=source.stop, pool=status)
    source.measure_rate(run.total_rate)  # the stall watchdog's expected share time
    return run.run()
