"""``overlay account``: register, log in, log out, or move an account to this node's key.

The node's Ed25519 key (in its state directory) is the device: ``register``
binds the new account to it, ``login`` works only from it, and ``change-key``
moves the account to another node's key.  ``login`` leaves a session in the
state directory (:mod:`overlay.cli.session_file`) that ``overlay contacts`` and
the node resume without the password.

Passwords never appear on the command line, where ``ps`` and shell history
would show them: they come from the terminal, from one line of standard input
(``--password-stdin``) or from ``$OVERLAY_PASSWORD``.

Four subcommands with their help texts make it a little over 400 lines; they
share the password and server-target helpers, so they stay together.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import trio

from overlay.addresses import Address, format_address
from overlay.cli.common import address_arg
from overlay.cli.session_file import (
    SavedSession,
    known_servers,
    load_session,
    pin_key,
    pinned_key,
    remove_session,
    save_session,
    server_key_verdict,
)
from overlay.directory.client.connection import DirectoryClient, LoginResult, Response
from overlay.directory.client.servers import connect_first
from overlay.directory.protocol import (
    MIN_PASSWORD_DISTINCT,
    MIN_PASSWORD_LEN,
    USERNAME_HELP,
    USERNAME_RULE,
    password_weakness,
)
from overlay.errors import ConfigError, DirectoryError
from overlay.ids import PUBLIC_KEY_LEN, Identity
from overlay.state import default_state_dir, load_identity

PASSWORD_ENV = "OVERLAY_PASSWORD"
CONNECT_TIMEOUT = 5.0
NOT_LOGGED_IN = "not logged in: run overlay account login"


# --- argument types and shared options ---------------------------------------------------


def server_arg(text: str) -> Address:
    """A directory server's ``HOST:PORT`` (bare PORT: 127.0.0.1); port 0 cannot be dialled."""
    address = address_arg(text)
    if address[1] == 0:
        raise argparse.ArgumentTypeError("the server's port cannot be 0")
    return address


def server_key_arg(text: str) -> bytes:
    """The server's public key as printed by ``overlay server`` (64 hex digits)."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != PUBLIC_KEY_LEN:
        raise argparse.ArgumentTypeError(
            f"a server key is {2 * PUBLIC_KEY_LEN} hex digits (see overlay server --show-key)")
    return key


def username_arg(text: str) -> str:
    """Checked here too, so that a typo is a usage error and costs no round trip."""
    if USERNAME_RULE.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"invalid username {text!r}: {USERNAME_HELP}")
    return text


def directory_options() -> argparse.ArgumentParser:
    """A parent parser with the options every account and contacts command takes."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("directory server")
    group.add_argument(
        "--server", type=server_arg, action="append", default=None, metavar="HOST:PORT",
        help="a directory server (default: the saved session's); repeat it for several "
             "servers on one database, tried in order when one is down",
    )
    group.add_argument(
        "--server-key", type=server_key_arg, default=None, metavar="HEX",
        help="the key the server must prove; without it the first key seen is pinned in the "
             "state directory and a different one later is refused",
    )
    group.add_argument(
        "--state", type=Path, default=None, metavar="DIR",
        help=f"state directory of the node whose key is the identity "
             f"(default {default_state_dir()})",
    )
    return parent


def password_options() -> argparse.ArgumentParser:
    """A parent parser for the commands that need the password."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--password-stdin", action="store_true",
        help=f"read the password from the first line of standard input (for scripts); "
             f"else ${PASSWORD_ENV} if set, else ask on the terminal",
    )
    return parent


def read_password(args: argparse.Namespace, username: str, *, confirm: bool) -> str:
    """From stdin if asked, else the environment, else the terminal (twice when choosing one).

    Choosing one (``confirm``), the server's rules are checked here first, right
    after the first entry: a weak password is refused before it is typed again.
    """
    def acceptable(password: str) -> str:
        if confirm and (weakness := password_weakness(username, password)) is not None:
            raise ConfigError(weakness)
        return password

    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise ConfigError("--password-stdin: standard input is empty")
        password = line.rstrip("\r\n")  # only the line end: spaces may belong to it
    elif env := os.environ.get(PASSWORD_ENV):
        password = env
    elif not sys.stdin.isatty():
        raise ConfigError(f"no password: use a terminal, --password-stdin or ${PASSWORD_ENV}")
    else:
        try:
            password = getpass.getpass(f"password for {username}: ")
            if password:
                acceptable(password)
            if confirm and getpass.getpass("repeat the password: ") != password:
                raise ConfigError("the two passwords differ")
        except EOFError:
            raise ConfigError("no password given") from None
    if not password:
        raise ConfigError("the password is empty")
    return acceptable(password)


# --- time for people ----------------------------------------------------------------------


def span(seconds: float) -> str:
    """A duration rounded the way people say it: '40 s', '5 min', '24 h', '7 days'."""
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def relative(timestamp: float, now: float) -> str:
    return f"in {span(timestamp - now)}" if timestamp >= now else f"{span(now - timestamp)} ago"


def moment(timestamp: float, now: float) -> str:
    """A Unix time as local date and time, and how far from now, e.g. for expiry dates."""
    local = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(timestamp))
    return f"{local} ({relative(timestamp, now)})"


# --- talking to the server ------------------------------------------------------------------


def given_servers(args: argparse.Namespace, session: SavedSession | None,
                  state: Path | None = None) -> tuple[Address, ...]:
    """--server (every one given), else the saved session's servers, else the one server
    this node has talked to (its key pinned in ``state``, e.g. by ``account register``)."""
    if args.server:
        return tuple(dict.fromkeys(args.server))
    if session is not None:
        return session.servers
    known = known_servers(state) if state is not None else ()
    if len(known) == 1:
        return known
    if known:
        raise ConfigError(f"which directory server? this node knows "
                          f"{', '.join(format_address(s) for s in known)}: "
                          f"pass --server HOST:PORT")
    raise ConfigError("which directory server? pass --server HOST:PORT")


def given_user(args: argparse.Namespace, session: SavedSession | None) -> str:
    """--user, else the saved session's username."""
    if args.user is not None:
        return str(args.user)
    if session is not None:
        return session.username
    raise ConfigError("which account? pass --user NAME")


@dataclass(slots=True)
class Target:
    """Which servers a command may talk to (the first that answers), the key they must
    prove, and as which node."""

    state: Path
    servers: tuple[Address, ...]
    given_key: bytes | None
    identity: Identity
    server: Address = field(init=False)
    """The server talked to (the first, until :meth:`connect` found one that answers)."""

    def __post_init__(self) -> None:
        self.server = self.servers[0]

    @classmethod
    def from_args(cls, args: argparse.Namespace, session: SavedSession | None) -> Target:
        """--server, else the saved session's servers; the identity of --state."""
        state = state_dir(args)
        return cls(state, given_servers(args, session, state), args.server_key,
                   load_identity(state))

    @property
    def where(self) -> str:
        return format_address(self.server)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[DirectoryClient]:
        """A connection to the first server that answers (:func:`connect_first`)."""
        async with connect_first(self.servers, self._connect_to) as (server, client):
            self.server = server
            yield client

    @asynccontextmanager
    async def _connect_to(self, server: Address) -> AsyncIterator[DirectoryClient]:
        """An authenticated connection whose server key was checked before any request.

        The library could refuse a wrong key itself (``server_key=``), but then
        it could not say which key the server proved; checking right after the
        handshake is as safe, since nothing (no password, no token) has been
        sent yet, and it lets the error name the new key.
        """
        pinned = pinned_key(self.state, server)
        async with DirectoryClient.connect(server, self.identity, server_key=None,
                                           connect_timeout=CONNECT_TIMEOUT) as client:
            proved = client.server_public_key
            note = server_key_verdict(server, proved, given=self.given_key, pinned=pinned)
            if note is not None:
                pin_key(self.state, server, proved)
                print(note, file=sys.stderr)
            yield client


def state_dir(args: argparse.Namespace) -> Path:
    path: Path = args.state or default_state_dir()
    return path


def suggest(args: argparse.Namespace, *words: str) -> str:
    """The follow-up command, with the --state and --server this one needed."""
    command = ["overlay", *words]
    if args.state is not None:
        command += ["--state", str(args.state)]
    for server in args.server or ():
        command += ["--server", format_address(server)]
    return shlex.join(command)


# --- the commands ------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "account",
        help="register, log in to or log out of the directory server",
        description=(
            "Manage this node's account on the directory server (overlay server).  The "
            "account is bound to the node's key in --state: register it once, log in to "
            "save a session that `overlay contacts` resumes, log out to end it.  Passwords "
            f"are read from the terminal, from stdin (--password-stdin) or from "
            f"${PASSWORD_ENV}, never from the command line.  The link to the server is "
            "authenticated (the server's pinned key) and encrypted (docs/protocol.md, "
            "section 9), and the password is also sealed for the server's key alone."
        ),
        epilog=(
            "example: overlay account register --server 127.0.0.1:7000 --user alice\n"
            "         overlay account login --server 127.0.0.1:7000 --user alice\n"
            "         overlay contacts add bob\n"
            "         overlay account logout"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    directory, password = directory_options(), password_options()

    def action(name: str, summary: str, description: str, epilog: str,
               *, needs_password: bool = True) -> argparse.ArgumentParser:
        parents = [common, directory, password] if needs_password else [common, directory]
        leaf = actions.add_parser(
            name, parents=parents, help=summary, description=description, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if needs_password:
            leaf.add_argument("--user", type=username_arg, required=name == "register",
                              metavar="NAME",
                              help="the account's username" + (
                                  "" if name == "register" else
                                  " (default: the saved session's)"))
        return leaf

    action(
        "register", "create an account bound to this node's key",
        f"Create account NAME on the server, bound to the key of the node in --state "
        f"(created if the directory is new).  The password is asked twice on a terminal; "
        f"it needs at least {MIN_PASSWORD_LEN} characters, {MIN_PASSWORD_DISTINCT} of them "
        f"different, and must not contain the "
        f"username.  {USERNAME_HELP[0].upper()}{USERNAME_HELP[1:]}.",
        "example: overlay account register --server 127.0.0.1:7000 --user alice\n"
        "         printf '%s\\n' \"$PW\" | overlay account register --user bob "
        "--server 127.0.0.1:7000 --password-stdin",
    ).set_defaults(run=run_register, verbose_default=-1)
    action(
        "login", "log in and save the session in the state directory",
        "Log in as NAME from this node's key and save the session (token, expiry, identity "
        "certificate) in the state directory, readable by you only, for `overlay contacts` "
        "to resume.  It replaces (and ends) a previous session of this node on that server.  "
        "Prints the node id and when the session and the certificate expire.",
        "example: overlay account login --server 127.0.0.1:7000 --user alice\n"
        "         OVERLAY_PASSWORD=... overlay account login --server 127.0.0.1:7000 "
        "--user alice --state /tmp/a",
    ).set_defaults(run=run_login, verbose_default=-1)
    action(
        "logout", "end the saved session on the server and forget it",
        "End the saved session on the server (its presence becomes offline) and delete it "
        "from the state directory.  If the server cannot be reached the local session is "
        "deleted anyway, with a warning: the token then stays valid on the server until it "
        "expires.",
        "example: overlay account logout\n"
        "         overlay account logout --state /tmp/a",
        needs_password=False,
    ).set_defaults(run=run_logout, verbose_default=-1)
    action(
        "change-key", "move an account to this node's key (a new device)",
        "Bind account NAME to the key of the node in --state, proving it with the password: "
        "use it on a new device or after losing the old key.  The old node's live sessions "
        "end; log in again from this node afterwards.",
        "example: overlay account change-key --server 127.0.0.1:7000 --user alice "
        "--state ~/laptop-node",
    ).set_defaults(run=run_change_key, verbose_default=-1)


def run_register(args: argparse.Namespace) -> int:
    target = Target.from_args(args, load_session(state_dir(args)))
    password = read_password(args, args.user, confirm=True)
    response = trio.run(_register, target, args.user, password)
    print(f"{response.reason} {args.user} on {target.where} for node "
          f"{target.identity.node_id}")
    print(f"next: {suggest(args, 'account', 'login', '--user', args.user)}")
    return 0


async def _register(target: Target, username: str, password: str) -> Response:
    async with target.connect() as client:
        return await client.register(username, password)


def run_login(args: argparse.Namespace) -> int:
    old = load_session(state_dir(args))
    target = Target.from_args(args, old)
    user = given_user(args, old)
    password = read_password(args, user, confirm=False)
    result, server_key = trio.run(_login, target, user, password, old)
    save_session(target.state, SavedSession(
        server=target.servers[0], failover=target.servers[1:], server_key=server_key,
        username=result.username,
        node_id=target.identity.node_id, token=result.token, expires_at=result.expires_at,
        certificate=result.certificate.raw,
        certificate_expires_at=result.certificate.expires_at,
    ))
    now = time.time()
    print(f"logged in as {result.username} on {target.where}")
    print(f"  node id      {target.identity.node_id}")
    print(f"  session      until {moment(result.expires_at, now)}")
    print(f"  certificate  until {moment(result.certificate.expires_at, now)}")
    return 0


async def _login(target: Target, username: str, password: str,
                 old: SavedSession | None) -> tuple[LoginResult, bytes]:
    async with target.connect() as client:
        result = await client.login(username, password)
        if old is not None and old.on(target.servers) and old.token != result.token:
            # End the session this login replaces (only now: a failed login must not
            # log the user out), so that live tokens do not pile up on the server.
            # The new session lives on in the server's store, not in this connection.
            with suppress(DirectoryError):
                await client.resume(old.token)
                await client.logout()
        return result, client.server_public_key


def run_logout(args: argparse.Namespace) -> int:
    state = state_dir(args)
    session = load_session(state)
    if session is None:
        print("not logged in: nothing to do")
        return 0
    check_session_server(args, session)
    failure: DirectoryError | None = None
    try:
        trio.run(_logout, Target.from_args(args, session), session)
    except DirectoryError as exc:
        failure = exc
    finally:
        remove_session(state)  # even when the server could not be told, or on Ctrl-C
    if failure is None:
        print(f"logged out {session.username} from {format_address(session.server)}")
    else:
        print(f"overlay account: warning: could not end the session on the server ({failure}); "
              f"it stays valid there until {moment(session.expires_at, time.time())}",
              file=sys.stderr)
        print(f"removed the local session of {session.username}")
    return 0


async def _logout(target: Target, session: SavedSession) -> None:
    async with target.connect() as client:
        await client.resume(session.token)
        await client.logout()


def check_session_server(args: argparse.Namespace, session: SavedSession) -> None:
    """A --server other than the session's is a mistake worth stopping for."""
    if args.server and not session.on(tuple(args.server)):
        raise ConfigError(
            f"the saved session is on {format_address(session.server)}, not "
            f"{', '.join(format_address(server) for server in args.server)}; log in there "
            f"first: "
            f"{suggest(args, 'account', 'login', '--user', session.username)}")


def run_change_key(args: argparse.Namespace) -> int:
    session = load_session(state_dir(args))
    target = Target.from_args(args, session)
    user = given_user(args, session)
    password = read_password(args, user, confirm=False)
    response = trio.run(_change_key, target, user, password)
    print(f"{user}: {response.reason} (node {target.identity.node_id})")
    return 0


async def _change_key(target: Target, username: str, password: str) -> Response:
    async with target.connect() as client:
        return await client.change_key(username, password)
