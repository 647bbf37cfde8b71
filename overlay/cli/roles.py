"""``overlay supernode`` and ``overlay client``: the two roles of the hybrid design."""

from __future__ import annotations

import argparse
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from overlay.addresses import format_address
from overlay.cli.account import (
    directory_options,
    given_servers,
    password_options,
    read_password,
    username_arg,
)
from overlay.cli.common import address_arg, positive_int, stop_signals
from overlay.cli.session_file import load_session, pinned_key, saved_token
from overlay.directory.client.servers import ServerList
from overlay.net.node import NodeConfig
from overlay.roles.edge import Credentials, EdgeConfig
from overlay.roles.supernode import SupernodeConfig
from overlay.runtime import EdgeRole, PeerSpec, SupernodeRole, run_peer
from overlay.state import StateDir, default_state_dir

log = logging.getLogger("overlay.cli")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    directory = directory_options()
    supernode = subparsers.add_parser(
        "supernode",
        parents=[common, directory],
        help="run a supernode: part of the routing mesh, relays for edge clients",
        description=(
            "Run a supernode.  It must be reachable: the directory server dials it back "
            "before listing it.  It links to the supernodes nearest to it by measured RTT "
            "(plus a random one, so the mesh stays connected), routes among them, and "
            "relays for the edge clients attached to it, including clients behind NAT."
        ),
        epilog=(
            "example: overlay supernode --state /tmp/sn1 --listen 127.0.0.1:7101 "
            "--server 127.0.0.1:7000 --server-key KEY"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    supernode.add_argument("--listen", type=address_arg, required=True, metavar="HOST:PORT",
                           help="where to accept supernodes and edge clients")
    supernode.add_argument("--advertise", type=address_arg, default=None, metavar="HOST:PORT",
                           help="the address others dial (default: the listen address)")
    supernode.add_argument("--mesh-nearest", type=positive_int, default=SupernodeConfig().nearest,
                           metavar="K",
                           help="link to the K nearest supernodes (default %(default)s)")
    supernode.set_defaults(run=run_supernode)

    client = subparsers.add_parser(
        "client",
        parents=[common, directory, password_options()],
        help="run an edge client: log in, attach to the nearest supernode",
        description=(
            "Run an edge client for USER.  It logs in (with the session saved by "
            "`overlay account login`, or a password), asks the server to dial it back if it "
            "listens (only then is it reachable: others may link to it directly and it may "
            "be promoted to supernode), attaches to the supernode with the lowest RTT and "
            "keeps a standby, and publishes its presence.  Without --listen it only dials "
            "out, like a client behind NAT.  `overlay send --state DIR CONTACT TEXT` "
            "talks to a contact through it; `overlay status --state DIR` shows, for each "
            "conversation, whether it is direct or relayed and through which supernodes."
        ),
        epilog=(
            "example: overlay client --state /tmp/alice --server 127.0.0.1:7000 --user alice"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    client.add_argument("--user", type=username_arg, required=True, metavar="NAME")
    client.add_argument("--listen", type=address_arg, default=None, metavar="HOST:PORT",
                        help="accept direct links here (default: do not listen, dial out only)")
    client.add_argument("--no-supernode", action="store_true",
                        help="refuse if the server asks this client to become a supernode")
    client.add_argument("--no-punch", action="store_true",
                        help="never try to turn a relayed conversation with another client "
                             "into a direct link (hole punching); every outgoing connection "
                             "then uses its own ephemeral port")
    client.set_defaults(run=run_client)


def directory_target(args: argparse.Namespace) -> tuple[Path, ServerList, bytes | None]:
    """The state directory, the servers (--server, else the saved session's) and the key
    to pin (--server-key, else one pinned before; None: trust the first one seen)."""
    state: Path = args.state or default_state_dir()
    servers = ServerList(given_servers(args, load_session(state), state))
    pinned = (pinned_key(state, server) for server in servers)
    key = args.server_key or next((key for key in pinned if key is not None), None)
    return state, servers, key


def run_supernode(args: argparse.Namespace) -> int:
    return trio.run(_supernode, args)


async def _supernode(args: argparse.Namespace) -> int:
    state_path, server, key = directory_target(args)
    role = SupernodeRole(server, key, args.advertise, SupernodeConfig(nearest=args.mesh_nearest))
    with stop_signals() as signals, StateDir(state_path) as state:
        spec = PeerSpec(state.load_or_create_identity(), NodeConfig(listen=args.listen), role,
                        control_path=state.control_socket)
        async with _stopped_by(signals), run_peer(spec) as peer:
            assert peer.node.listen_address is not None
            print(f"supernode {peer.node.node_id} listening on "
                  f"{format_address(peer.node.listen_address)}", flush=True)
            await _until_stopped()
    return 0


def run_client(args: argparse.Namespace) -> int:
    return trio.run(_client, args)


async def _client(args: argparse.Namespace) -> int:
    state_path, server, key = directory_target(args)
    token = saved_token(state_path, args.user, server.addresses, time.time())
    if token is not None:
        credentials = Credentials(args.user, token=token)
    else:
        credentials = Credentials(args.user, password=read_password(args, args.user,
                                                                    confirm=False))

    async def promote() -> None:
        print(f"promoted: {args.user} is now also a supernode", flush=True)

    role = EdgeRole(credentials, server, key,
                    EdgeConfig(supernode_ok=not args.no_supernode, punch=not args.no_punch),
                    on_promote=promote)
    # One local port for every outgoing connection: the mapping hole punching reuses.
    node_config = NodeConfig(listen=args.listen, outgoing_port=None if args.no_punch else 0)
    with stop_signals() as signals, StateDir(state_path) as state:
        spec = PeerSpec(state.load_or_create_identity(), node_config, role,
                        control_path=state.control_socket)
        async with _stopped_by(signals), run_peer(spec) as peer:
            assert peer.edge is not None
            home = peer.edge.home
            print(f"client {args.user} ({peer.node.node_id}) attached to "
                  f"{home.hex() if home else '-'}; "
                  f"{'reachable' if peer.edge.reachable else 'not reachable (relayed)'}",
                  flush=True)
            await _until_stopped()
    return 0


async def _until_stopped() -> None:
    """Serve until :func:`_stopped_by` cancels (typed to return, so that the code after
    the ``async with`` stays reachable for mypy: the cancellation ends there)."""
    await trio.sleep_forever()


@asynccontextmanager
async def _stopped_by(signals: trio.abc.ReceiveChannel[int]) -> AsyncIterator[None]:
    """The block runs until a signal comes, start-up included (a daemon still waiting
    for its directory server stops at Ctrl-C like a running one)."""
    async with trio.open_nursery() as nursery:
        async def watch() -> None:
            async for signum in signals:
                log.info("received %s, stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                return

        nursery.start_soon(watch)
        yield
        nursery.cancel_scope.cancel()

