"""``overlay server``: the login/contacts/presence directory, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from overlay.addresses import format_address
from overlay.cli.common import address_arg, stop_signals
from overlay.directory.server.limits import RegistrationLimits
from overlay.directory.server.listener import DirectoryServer
from overlay.directory.server.service import DirectoryConfig
from overlay.directory.server.store import open_store
from overlay.errors import ConfigError, ControlError
from overlay.net.control import ControlConnection, serve_control
from overlay.state import StateDir, default_state_dir, load_identity

log = logging.getLogger("overlay.cli")

DEFAULT_SERVER = "127.0.0.1:7000"
DATABASE_FILE = "directory.sqlite3"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "server",
        parents=[common],
        help="run the login/contacts/presence directory server",
        description=(
            "Run the central directory: accounts (Argon2id-hashed passwords), sessions, "
            "contacts, presence visible to accepted contacts only, signed identity "
            "certificates, the supernode list and reachability dial-backs.  Clients connect "
            "with an authenticated link and pin this server's public key, which is printed "
            "at start (and by --show-key).  Every acknowledged change is on disk before the "
            "answer leaves (SQLite: WAL, synchronous=FULL; PostgreSQL: synchronous_commit=on).  "
            "Several servers may share one PostgreSQL database and one key (copy the state "
            "directory's key).  See docs/directory.md."
        ),
        epilog=(
            "example: overlay server --state /tmp/dir --listen 127.0.0.1:7000\n"
            "         overlay account register --server 127.0.0.1:7000 "
            "--server-key KEY --user alice"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen", type=address_arg, default=address_arg(DEFAULT_SERVER), metavar="HOST:PORT",
        help=f"address to serve on (default {DEFAULT_SERVER}; port 0 picks one)",
    )
    parser.add_argument(
        "--state", type=Path, default=None, metavar="DIR",
        help=f"state directory holding the server key (default {default_state_dir()}/server)",
    )
    parser.add_argument(
        "--db", default=None, metavar="PATH|URL",
        help=f"SQLite database file (default STATE/{DATABASE_FILE}; created if missing), or "
             "a PostgreSQL URL postgresql://USER:PASSWORD@HOST:PORT/DBNAME that several "
             "server processes can share (the schema is created or migrated at start)",
    )
    parser.add_argument(
        "--registrations-per-hour", type=_positive_int, default=None, metavar="N",
        help="new accounts allowed per source address per hour (default "
             f"{RegistrationLimits().per_address}; each node key may open "
             f"{RegistrationLimits().per_key})",
    )
    parser.add_argument(
        "--max-login-queue", type=_positive_int, default=None, metavar="N",
        help=f"logins and registrations waiting for a password hash at most (default "
             f"{DirectoryConfig().max_queued_hashes}); more are answered 429 with a "
             "retry_after, and clients come back later (a storm of re-logins)",
    )
    parser.add_argument("--show-key", action="store_true",
                        help="print the server's public key (for clients to pin) and exit")
    parser.set_defaults(run=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def run(args: argparse.Namespace) -> int:
    return trio.run(_run, args)


async def _run(args: argparse.Namespace) -> int:
    state_path: Path = args.state or default_state_dir() / "server"
    if args.show_key:  # works while the server runs: reads the key without the lock
        print(load_identity(state_path).public_key.hex())
        return 0
    with stop_signals() as signals, StateDir(state_path) as state:
        identity = state.load_or_create_identity()
        store = open_store(args.db or state_path / DATABASE_FILE)
        try:
            config = DirectoryConfig()
            if args.registrations_per_hour is not None:
                config = replace(config, registrations=replace(
                    config.registrations, per_address=args.registrations_per_hour))
            if args.max_login_queue is not None:
                config = replace(config, max_queued_hashes=args.max_login_queue)
            cluster = None
            if store.engine == "postgresql":  # other server processes may share it: hear them
                from overlay.directory.server.cluster import PostgresCluster
                from overlay.directory.server.store_pg import PostgresStore
                assert isinstance(store, PostgresStore)
                cluster = PostgresCluster(store.url)
            server = DirectoryServer(identity, store, directory_config=config, cluster=cluster)
            async with trio.open_nursery() as nursery:
                try:
                    address = await nursery.start(server.serve, args.listen)
                except OSError as exc:
                    raise ConfigError(f"cannot listen on {format_address(args.listen)}: "
                                      f"{exc.strerror or exc}") from None
                started = trio.current_time()

                async def control(op: str, request: dict[str, Any],
                                  connection: ControlConnection) -> Any:
                    if op != "status":
                        raise ControlError(f"a directory server answers only 'status', "
                                           f"not {op!r}")
                    return {**server.status(address, store.description),
                            "uptime_s": round(trio.current_time() - started, 3)}

                await nursery.start(serve_control, state.control_socket, control)
                # One line for people and scripts: where, and which key to pin.
                print(f"directory server listening on {format_address(address)} "
                      f"key {identity.public_key.hex()}", flush=True)
                log.info("database %s (schema version %d)", store.description,
                         store.schema_version)
                async for signum in signals:
                    log.info("received %s, stopping", signal.Signals(signum).name)
                    break
                directory = server.directory
                log.info("login queue: peak %d, %d attempt(s) shed with 429",
                         directory.hashes_peak, directory.hashes_shed)
                nursery.cancel_scope.cancel()
        finally:
            store.close()
    return 0
