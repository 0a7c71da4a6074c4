"""`miner mine`: check the chain and arguments, mine, and always end with a summary.

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
from pathlib import Path

from miner.chain.lock import ChainLock
from miner.cli.interrupts import ignore_stop_signals, restore_handlers
from miner.errors import MinerError, UsageError


def cmd_mine(args: argparse.Namespace) -> int:
    from miner.backends.registry import make_backends
    from miner.chain.chain import Chain
    from miner.chain.clock import check_clock
    from miner.chain.files import check_chain_path, check_creatable
    from miner.cli.options import metrics_options
    from miner.consensus.params import check_same_preset, preset, with_genesis_time
    from miner.mining.loop import mine
    from miner.mining.sources.local import LocalChainSource
    from miner.ui.reporting import make_reporter

    if not args.unit_seconds > 0:
        raise UsageError("--unit-seconds must be positive")
    args.metrics = metrics_options(args)  # a bad port is said before anything starts
    if args.pow and not args.url:
        raise UsageError("--pow is for --url; a local chain's proof of work is its preset's")
    if args.url:
        from miner.mining.sources.pool_url import is_pool_url
        pools = [is_pool_url(url) for url in args.url]
        if any(pools):
            if not all(pools):
                raise UsageError("--url: give Stratum pools (stratum+tcp://) or one node (http://), not both")
            return _mine_pool(args)
        if len(args.url) > 1:
            raise UsageError("--url: one node (http://) at a time; failover is for Stratum pools")
        _refuse_pool_options(args)
        args.blocks = args.blocks or 5
        return _mine_node(args)
    _refuse_pool_options(args)
    args.blocks = args.blocks or 5
    params = preset(args.preset or "local", int(time.time()))  # an unknown preset fails before any compile
    path = Path(args.chain)
    check_chain_path(path, must_exist=False)  # a name no file system takes, say, before any I/O
    chain = None
    lock = ChainLock(path, exclusive=False)
    if path.exists() and (not path.is_file() or path.stat().st_size > 0):
        lock.acquire()  # a chain a node owns is mined through the node (--url)
        try:
            chain = Chain.open(path)  # refuses a damaged or read-only chain before the compile
            if args.preset is not None:
                check_same_preset(chain.params, args.preset, chain.path)
            check_clock(chain, int(time.time()))
        except BaseException:
            lock.release()
            raise
    else:
        check_creatable(path)
        lock.acquire()
    try:
        pow = chain.params.pow if chain is not None else params.pow
        backends = make_backends(args.backend, threads=args.threads, cpu_kernel=args.cpu_kernel, pow=pow,
                                 lookup_gap=args.lookup_gap)
        reporter = make_reporter(args.json, args.quiet)
        # Mining starts at once (kernels compile in the background, `mining/startup.py`), so a
        # new chain's genesis time "now" is when hashing begins.
        if chain is None:
            chain = Chain.open_or_create(path, with_genesis_time(params, int(time.time())))
    except BaseException:
        if chain is not None:
            chain.close()
        lock.release()
        raise
    desc = {"path": str(chain.path), "height": chain.height, "preset": chain.params.name,
            "rule": chain.params.rule, "spacing": chain.params.spacing}

    def close() -> None:
        chain.close()
        lock.release()

    return _mine_and_report(args, backends, reporter, desc, close, lambda coordinator, on_block, on_share: mine(
        coordinator, LocalChainSource(chain), args.blocks, on_block, on_job=reporter.job))


def _mine_and_report(args: argparse.Namespace, backends, reporter, desc: dict, close, mine,
                     pool=None) -> int:
    """Run `mine(coordinator, on_block, on_share)` with the summary always printed: on success,
    on Ctrl-C (exit 130) and on a MinerError (a block that cannot be stored, a node gone), which
    is raised after the summary. `close` releases what the run holds, whatever happened. `pool`:
    the pool connection's status, when mining at a pool."""
    from miner.mining.coordinator import Coordinator
    from miner.mining.loop import BlockFound, ShareFound, ShareTally
    from miner.mining.startup import StagedStart
    from miner.primitives.compact import DIFF1_TARGET

    if args.wait_for_kernels:
        _warm_up_all(backends, reporter)
    staged = StagedStart(backends, reporter.backend_event)  # hashing at once, compiled kernels join
    coordinator = Coordinator(staged.ready, unit_seconds=args.unit_seconds,
                              on_event=reporter.coordinator_event)
    found: list[BlockFound] = []
    shares = ShareTally() if pool is not None else None
    metrics_server = None
    if args.metrics is not None:
        from miner.mining.metrics import MinerCollector, serve_metrics
        try:
            metrics_server, port = serve_metrics(MinerCollector(coordinator, found, shares, pool), *args.metrics)
        except BaseException:
            close()
            raise
        desc["metrics"] = f"http://{args.metrics[0]}:{port}/metrics"

    def on_block(ev: BlockFound) -> None:
        if ev.verdict in ("", "accepted"):  # a node's refusal is reported, not counted
            found.append(ev)
        if shares is not None:
            shares.add(ev.verdict == "accepted", ev.verdict, DIFF1_TARGET / max(int(ev.hash_hex, 16), 1), block=True)
        reporter.block(ev)

    def on_share(ev: ShareFound) -> None:
        shares.add(ev.accepted, ev.verdict, ev.difficulty)
        reporter.share(ev, shares)

    interrupted = False
    failure: MinerError | None = None
    t0 = time.perf_counter()
    previous: dict = {}
    try:
        reporter.start(desc, staged.all, args.blocks, args.shares or 0, coordinator)
        coordinator.start()
        staged.start(coordinator)
        mine(coordinator, on_block, on_share)
    except KeyboardInterrupt:
        interrupted = True
    except MinerError as exc:
        failure = exc
    finally:
        # A second Ctrl-C or SIGTERM while shutting down must not cost the summary.
        previous = ignore_stop_signals()
        # Units in flight stop at their next cancellation check; an append is one SQLite
        # transaction, so whatever happens here no block is left half-written.
        staged.stop()
        coordinator.stop()
        reporter.stop()
        close()
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
    elapsed = time.perf_counter() - t0
    summary = mine_summary(coordinator, found, elapsed, interrupted)
    if shares is not None:
        summary["shares"] = shares.as_dict()
    reporter.finish(summary)
    restore_handlers(previous)
    if failure is not None:
        raise failure
    return 130 if interrupted else 0


def _refuse_pool_options(args: argparse.Namespace) -> None:
    for option, given in (("--shares", args.shares), ("--suggest-difficulty", args.suggest_difficulty)):
        if given:
            raise UsageError(f"{option} is for mining at a pool (--url stratum+tcp://...)")


def _payout_script(args: argparse.Namespace) -> bytes:
    from miner.primitives.address import parse_script_hex, script_for_address
    if args.payout_script and args.payout_address:
        raise UsageError("give --payout-script or --payout-address, not both")
    if args.payout_script:
        return parse_script_hex(args.payout_script)
    if args.payout_address:
        return script_for_address(args.payout_address)
    return b"\x51"  # OP_TRUE: anyone can spend it, as on the local chain


def _mine_node(args: argparse.Namespace) -> int:
    """`miner mine --url`: getblocktemplate work from a node, solved blocks to its submitblock."""
    from miner.backends.registry import make_backends
    from miner.mining.loop import mine
    from miner.mining.rpc_client import RpcClient
    from miner.mining.sources.gbt import TemplateSource
    from miner.ui.reporting import make_reporter

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
    backends = make_backends(args.backend, threads=args.threads, cpu_kernel=args.cpu_kernel, pow=pow,
                             lookup_gap=args.lookup_gap)
    desc = {"path": client.display_url, "height": first.height - 1, "preset": "node", "rule": "node",
            "spacing": 0, "detail": f"a node's chain, tip {first.height - 1}"}  # the URL is said once, as the place
    return _mine_and_report(args, backends, reporter, desc, lambda: None, lambda coordinator, on_block, on_share:
                            mine(coordinator, source, args.blocks, on_block, on_job=reporter.job))


def cookie_places(chain: Path) -> list[Path]:
    """Where a local `miner node` would have written its cookie (`auth.cookie_path`: NAME.cookie
    beside the chain NAME), in the order they are tried: that of the chain this command names
    (--chain, else $MINER_CHAIN, else the default), then that of the default chain in the current
    folder, which a node started here with no --chain writes (a $MINER_CHAIN set for other work
    should not hide that one)."""
    from miner.cli.main import DEFAULT_CHAIN
    from miner.node.rpc.auth import cookie_path

    places = []
    for path in (chain, Path(DEFAULT_CHAIN)):
        place = cookie_path(path)
        if place not in places:
            places.append(place)
    return places


def _mine_pool(args: argparse.Namespace) -> int:
    """`miner mine --url stratum+tcp://...`: a pool's jobs, shares to its mining.submit, with
    failover over the pools in the order given."""
    from miner.backends.registry import make_backends
    from miner.mining.loop import mine
    from miner.mining.metrics import PoolStatus
    from miner.mining.sources.pool_url import PoolUrl
    from miner.mining.sources.stratum import StratumSource
    from miner.ui.reporting import make_reporter

    if args.payout_address or args.payout_script or args.rpc_cookie_file:
        raise UsageError("a pool builds the coinbase and checks its own workers: "
                         "--payout-address, --payout-script and --rpc-cookie-file are for http:// nodes")
    urls = [PoolUrl.parse(url) for url in args.url]
    reporter = make_reporter(args.json, args.quiet)
    status = PoolStatus()

    def on_event(event: dict) -> None:
        status.update(event)
        reporter.pool(event)

    pow = args.pow or "sha256d"
    source = StratumSource(urls, on_event=on_event, retry_primary=args.pool_retry, pow=pow, retries=args.retries,
                           stall_factor=args.pool_stall, suggest_difficulty=args.suggest_difficulty)
    first = source.open()  # no pool reachable and no retry left: said before the compile
    try:
        backends = make_backends(args.backend, threads=args.threads, cpu_kernel=args.cpu_kernel, pow=pow,
                                 lookup_gap=args.lookup_gap)
    except BaseException:
        source.stop()
        raise
    blocks, shares = args.blocks or 0, args.shares or 0
    args.blocks = blocks
    desc = {"path": first.display, "height": 0, "preset": "pool", "rule": "pool", "spacing": 0,
            "detail": "Stratum pool" + (f", failover to {len(urls) - 1} more" if len(urls) > 1 else "")}
    def run(coordinator, on_block, on_share):
        source.measure_rate(coordinator.total_rate)  # the stall watchdog's expected share time
        return mine(coordinator, source, blocks, on_block, on_job=reporter.job, shares=shares, on_share=on_share)
    return _mine_and_report(args, backends, reporter, desc, source.stop, run, pool=status)


def _warm_up_all(backends, reporter) -> None:
    """--wait-for-kernels: every backend compiled (or loaded) before the first hash."""
    for backend in backends:
        t0 = time.perf_counter()
        backend.warm_up()
        reporter.backend_event({"event": "backend", "backend": backend.name, "status": "ready",
                                "seconds": time.perf_counter() - t0,
                                "message": f"{backend.name}: {backend.device}, ready after "
                                           f"{time.perf_counter() - t0:.1f} s"})


def mine_summary(coordinator, found, elapsed: float, interrupted: bool) -> dict:
    """The end-of-run figures, per backend and in total (also the `--json` summary event)."""
    stats = coordinator.stats
    hashes = sum(s.hashes for s in stats.values())
    per_backend = [{"name": b.name, "device": b.device, "hashes": stats[b.name].hashes,
                    "rate": stats[b.name].hashes / stats[b.name].seconds if stats[b.name].seconds else 0.0,
                    "share": stats[b.name].hashes / hashes if hashes else 0.0,
                    "hits": stats[b.name].hits, "stale": stats[b.name].stale,
                    "rejected": stats[b.name].rejected}
                   for b in coordinator.backends]
    return {"event": "summary", "blocks": len(found), "seconds": elapsed, "hashes": hashes,
            "rate": hashes / elapsed if elapsed else 0.0, "interrupted": interrupted,
            "backends": per_backend}


# --------------------------------------------------------------------------- entry point

