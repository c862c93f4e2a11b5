"""A standalone RaftStore member process: one Raft member plus an etcd v3 JSON endpoint.

Controllers embed RaftStore in-process; this process exists for what runs a store on its own:
HA and chaos tests, benchmarks, and users who want etcd-style curl access to a member. Started
by ``corral store serve`` (or ``python -m raftstore.member``); see ``--help``.

Exit codes: 0 after SIGTERM/SIGINT, 2 for configuration or data errors (one line on stderr,
never a traceback), so a supervisor does not crash-loop on a damaged data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from raftstore.durability import CorruptDataError, FsyncPolicy
from raftstore.gateway import make_app, member_id_of
from raftstore.raft import ConfigError, RaftConfig, RaftStore, split_hostport

log = logging.getLogger(__name__)

SECRET_ENV = "CORRAL_CLUSTER_SECRET"


def add_raft_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The flags of one Raft member, shared by ``corral store serve`` and ``corral controller``."""
    p.add_argument("--listen-peer", required=required, metavar="HOST:PORT",
                   help="address for Raft traffic between members")
    p.add_argument("--peers", default="", metavar="HOST:PORT,...",
                   help="the other members' peer addresses (empty: a one-member store)")
    p.add_argument("--data-dir", required=required, type=Path)
    p.add_argument("--secret-file", type=Path,
                   help=f"file holding the cluster secret (else ${SECRET_ENV})")
    p.add_argument("--fsync", choices=[f.value for f in FsyncPolicy],
                   default=FsyncPolicy.ALWAYS.value,
                   help="when the Raft journal reaches the disk (see docs/raftstore.md)")
    p.add_argument("--heartbeat", type=float, default=RaftConfig.heartbeat,
                   help="seconds (default %(default)s)")
    low, high = RaftConfig.election_timeout
    p.add_argument("--election-timeout", type=float, nargs=2, default=(low, high),
                   metavar=("MIN", "MAX"), help=f"seconds (default {low} {high})")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--unsafe-local-reads", action="store_true",
                   help="UNSAFE, only to show that the chaos checker catches it: reads answer "
                   "from this member's replica without a Raft read barrier, so a member cut "
                   "off from the leader serves stale data")


def _read_secret(args: argparse.Namespace) -> str:
    if args.secret_file is not None:
        try:
            return args.secret_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --secret-file: {exc.strerror}") from None
    return os.environ.get(SECRET_ENV, "")


def raft_config(args: argparse.Namespace) -> RaftConfig:
    """The RaftConfig the flags of ``add_raft_arguments`` describe."""
    return RaftConfig(
        address=args.listen_peer,
        peers=[p for p in args.peers.split(",") if p],
        data_dir=args.data_dir,
        secret=_read_secret(args),
        fsync=FsyncPolicy(args.fsync),
        heartbeat=args.heartbeat,
        election_timeout=tuple(args.election_timeout),
        unsafe_local_reads=args.unsafe_local_reads,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corral store serve",
        description="Run one member of Corral's replicated store (Raft) with an etcd v3 "
        "JSON endpoint for clients.",
    )
    add_raft_arguments(p)
    p.add_argument("--listen-client", default="127.0.0.1:2379", metavar="HOST:PORT",
                   help="address of the etcd v3 JSON endpoint (default %(default)s)")
    p.add_argument("--watch-progress-notify-interval", type=float, default=5.0, metavar="SECONDS",
                   help="how often idle watches that ask for it hear progress (etcd's "
                   "--experimental-watch-progress-notify-interval; default %(default)s)")
    return p


async def until_terminated() -> None:
    """Return on SIGTERM or SIGINT: how a supervisor asks a server process to shut down."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(args: argparse.Namespace) -> None:
    config = raft_config(args)
    peers = config.peers
    host, port = split_hostport(args.listen_client, "--listen-client")
    store = await RaftStore.open(config)
    cluster = ",".join(sorted([args.listen_peer, *peers]))
    app = make_app(
        store,
        cluster_id=member_id_of(cluster),
        member_id=member_id_of(args.listen_peer),
        member_name=args.listen_peer,
        progress_interval=args.watch_progress_notify_interval,
    )

    async def digest(_request: web.Request) -> web.Response:
        revision, value = store.digest()
        return web.json_response({"revision": str(revision), "digest": value})

    app.router.add_get("/corral/v1/digest", digest)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await store.close()
        raise ConfigError(f"cannot listen on {args.listen_client}: {exc.strerror}") from None
    log.warning("member %s serving clients on %s", args.listen_peer, args.listen_client)
    try:
        await until_terminated()
    finally:
        await runner.cleanup()
        await store.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(args))
    except (ConfigError, CorruptDataError) as exc:
        sys.stderr.write(f"corral store: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
