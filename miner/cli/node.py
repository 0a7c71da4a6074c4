"""`miner node`: check the options, then run the node (`miner.node.run`) until it stops."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from miner.chain.files import check_chain_path, with_journal
from miner.chain.lock import lock_path
from miner.cli.options import metrics_options
from miner.consensus.params import preset
from miner.errors import InvalidInput, UsageError
from miner.node.config import GeneratorOptions, MetricsOptions, NodeConfig, RpcOptions, StratumOptions
from miner.node.limits import OUTBOUND_PEERS, GuardLimits
from miner.node.p2p.manager import PeerOptions, parse_target
from miner.node.rpc.auth import cookie_name_fits, cookie_path
from miner.node.rpc.server import is_loopback
from miner.node.run import serve
from miner.node.stratum.config import StratumConfig
from miner.node.stratum.vardiff import VarDiffLimits
from miner.primitives.address import script_for_address


def check_cookie_path(cookie: Path, chain: Path) -> None:
    """The cookie is rewritten at every start: it must not be the chain file under any name, nor
    its journal or lock, which writing it would destroy."""
    real = chain.resolve()
    kept = {*with_journal(real), lock_path(chain)}
    same = cookie.exists() and chain.exists() and os.path.samefile(cookie, chain)
    if same or cookie.resolve() in kept:
        raise UsageError(f"--rpc-cookie-file {cookie} is the chain file or one of its own files; "
                         f"give another path")


def guard_limits(args: argparse.Namespace) -> GuardLimits:
    """Each face gets its own budget (`run.serve` drops those of faces not served)."""
    header_timeout = min(10.0, args.rpc_timeout)
    return GuardLimits(max_connections=args.max_connections, reserved=max(1, args.max_connections // 8),
                       stratum_miners=args.stratum_max_miners, inbound_peers=max(0, args.max_peers - OUTBOUND_PEERS),
                       header_timeout=header_timeout, idle_timeout=args.rpc_timeout,
                       body_timeout=args.rpc_timeout, write_timeout=args.rpc_timeout,
                       rate=float(args.rpc_rate), burst=2.0 * args.rpc_rate,
                       settle_grace=3 * header_timeout)


def stratum_options(args: argparse.Namespace) -> StratumOptions | None:
    if args.stratum_port is None:
        return None
    if not 0 <= args.stratum_port <= 65535:
        raise UsageError(f"--stratum-port must be 0 to 65535, got {args.stratum_port}")
    payout = b"\x51"
    if args.stratum_payout is not None:
        try:
            payout = script_for_address(args.stratum_payout)
        except InvalidInput as exc:
            raise UsageError(f"--stratum-payout: {exc}") from None
    if args.stratum_min_difficulty > args.stratum_max_difficulty:
        raise UsageError("--stratum-min-difficulty is above --stratum-max-difficulty")
    limits = VarDiffLimits(minimum=args.stratum_min_difficulty, maximum=args.stratum_max_difficulty,
                           shares_per_minute=args.stratum_shares_per_minute,
                           retarget_seconds=args.stratum_retarget_seconds)
    return StratumOptions(args.stratum_bind, args.stratum_port,
                          StratumConfig(payout_script=payout, vardiff=limits, difficulty=args.stratum_difficulty,
                                        extranonce2_size=args.stratum_extranonce2_size,
                                        idle_timeout=args.stratum_idle_timeout))


def peer_options(args: argparse.Namespace) -> PeerOptions | None:
    if args.listen is None and not args.connect:
        return None
    listen = None
    try:
        if args.listen is not None:
            text = args.listen if ":" in args.listen else f"127.0.0.1:{args.listen}"
            host, _, port = text.rpartition(":")
            if not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
                raise InvalidInput(f"--listen {args.listen!r} is not [HOST:]PORT with PORT 0 to 65535")
            listen = (host.strip("[]"), int(port))
    except InvalidInput as exc:
        raise UsageError(f"{exc}") from None
    try:
        connect = tuple(parse_target(t) for t in args.connect)
    except InvalidInput as exc:
        raise UsageError(f"--connect {exc}") from None
    return PeerOptions(listen, connect)


def cmd_node(args: argparse.Namespace) -> int:
    host = args.rpc_bind
    if (args.rpc_user is None) != (args.rpc_password is None):
        raise UsageError("give --rpc-user and --rpc-password together")
    if args.rpc_password is not None and not args.rpc_password:
        raise UsageError("--rpc-password must not be empty")
    if not is_loopback(host) and args.rpc_user is None:
        raise UsageError(f"--rpc-bind {host} is not a loopback address: refusing to serve it without "
                         f"--rpc-user and --rpc-password")
    if not 0 <= args.rpc_port <= 65535:
        raise UsageError(f"--rpc-port must be 0 to 65535, got {args.rpc_port}")
    chain_path = Path(args.chain)
    check_chain_path(chain_path, must_exist=False)
    peers = peer_options(args)
    params = preset(args.preset or "local", int(time.time()))
    cookie = None
    if args.rpc_user is None:
        cookie = Path(args.rpc_cookie_file) if args.rpc_cookie_file else cookie_path(chain_path)
        check_cookie_path(cookie, chain_path)
        if not cookie_name_fits(cookie):
            raise UsageError(f"the cookie file's name {cookie.name[:60]}... is too long for this file system; "
                             f"give a shorter --rpc-cookie-file (or a shorter --chain name)")
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a closed stdout must not end the node
    limits, stratum, metrics = guard_limits(args), stratum_options(args), metrics_options(args)
    config = NodeConfig(chain_path, params, RpcOptions(host, args.rpc_port, args.rpc_user, args.rpc_password, cookie),
                        GeneratorOptions(args.backend, args.threads, args.cpu_kernel), json_mode=args.json,
                        limits=limits, stratum=stratum,
                        metrics=MetricsOptions(*metrics, args.metrics_top_workers) if metrics else None,
                        peers=peers, require_preset=args.preset is not None)
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        pass
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # the reader left; the node's work is done
    return 0
