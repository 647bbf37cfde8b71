"""``overlay node``: run one peer until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

import trio

from overlay.cli.common import (
    DEFAULT_LISTEN,
    address_arg,
    peer_arg,
    positive_float,
    positive_int,
    stop_signals,
)
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.state import StateDir, default_state_dir

log = logging.getLogger("overlay.cli")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    defaults = LinkConfig()
    parser = subparsers.add_parser(
        "node",
        parents=[common],
        help="run a peer that links to its neighbours and measures their latency",
        description=(
            "Run an overlay peer.  It listens for neighbours, dials the ones given with "
            "--connect (redialling with backoff when a link drops), authenticates every "
            "link with its Ed25519 key and measures each neighbour's round-trip time. "
            "Stop it with Ctrl-C or SIGTERM; `overlay status --state DIR` asks it how it is."
        ),
        epilog=(
            "example: overlay node --state /tmp/a --listen 127.0.0.1:9001\n"
            "         overlay node --state /tmp/b --listen 127.0.0.1:9002 "
            "--connect 127.0.0.1:9001"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen", type=address_arg, default=address_arg(DEFAULT_LISTEN), metavar="HOST:PORT",
        help=f"address to accept neighbours on (default {DEFAULT_LISTEN}; port 0 picks one)",
    )
    parser.add_argument(
        "--connect", type=peer_arg, action="append", default=[], metavar="[ID@]HOST:PORT",
        help="a neighbour to keep a link to; repeat for several; ID@ refuses any other node",
    )
    parser.add_argument(
        "--state", type=Path, default=None, metavar="DIR",
        help=f"state directory holding the node key (default {default_state_dir()})",
    )
    parser.add_argument(
        "--hello-interval", type=positive_float, default=defaults.hello_interval,
        metavar="SECONDS", help=f"keepalive PING interval (default {defaults.hello_interval:g})",
    )
    parser.add_argument(
        "--dead-after", type=positive_int, default=defaults.dead_after, metavar="N",
        help=f"declare a neighbour dead after N missed PONGs (default {defaults.dead_after})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return trio.run(_run, args)


async def _run(args: argparse.Namespace) -> int:
    state_path: Path = args.state or default_state_dir()
    config = NodeConfig(
        listen=args.listen,
        link=LinkConfig(hello_interval=args.hello_interval, dead_after=args.dead_after),
    )
    with stop_signals() as signals, StateDir(state_path) as state:
        identity = state.load_or_create_identity()
        async with Node(identity, config, control_path=state.control_socket) as node:
            for expected, address in args.connect:
                node.connect(address, expected_peer=expected)
            log.info("node %s running (state %s); Ctrl-C stops it", node.node_id, state_path)
            async for signum in signals:
                log.info("received %s, stopping", signal.Signals(signum).name)
                break
    return 0
