"""The command line of ``overlay chat`` and its process: options, credentials, the
message to send, then one of the three modes (see :mod:`overlay.cli.chat`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NoReturn

import trio

from overlay.chat.envelope import MAX_TEXT_LEN
from overlay.cli.account import (
    directory_options,
    password_options,
    read_password,
    username_arg,
)
from overlay.cli.chat.client import Client, check_text
from overlay.cli.chat.interactive import run_interactive
from overlay.cli.chat.json_lines import run_json_stream
from overlay.cli.chat.one_shot import run_one_shot
from overlay.cli.common import address_arg, positive_float, stop_signals
from overlay.cli.roles import directory_target
from overlay.cli.session_file import saved_token
from overlay.directory.client.servers import ServerList
from overlay.errors import ConfigError
from overlay.net.node import NodeConfig
from overlay.roles.edge import Credentials, EdgeConfig
from overlay.runtime import EdgeRole, PeerSpec, run_peer
from overlay.state import StateDir

DEFAULT_TIMEOUT = 30.0


# --- the command line ----------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "chat",
        parents=[common, directory_options(), password_options()],
        help="chat with contacts: interactive, one message (--to), or a JSON stream",
        description=(
            "Chat as USER: log in (the session saved by `overlay account login`, or a "
            "password), attach to the nearest supernode and talk to contacts, end-to-end "
            "sealed, relayed by supernodes or over a direct link.  Without --to or --json it "
            "is interactive: type /help.  Each message is one line whose state turns from "
            "[sent] to [delivered] when the recipient's receipt returns; Up/Down recall "
            "earlier lines (kept in STATE/chat-USER.input-history), Tab completes commands "
            "and contact names.  Messages to an offline contact are "
            "queued in the history (STATE/chat-USER.sqlite3) and sent when the contact comes "
            "online while `overlay chat` runs.\n\n"
            "--to CONTACT sends one message (--message TEXT, else standard input) and exits "
            "0 only once it is delivered; 1 with the reason otherwise (it then stays "
            "queued).  --json prints one JSON object per line: {\"event\": \"ready\"} first, "
            "then message, queued, sent, delivered, presence, rejected, contact_request, "
            "contact_accepted, contact_removed and error events."
        ),
        epilog=(
            "examples: overlay chat --server 127.0.0.1:7000 --user alice\n"
            "          overlay chat --user alice --to bob --message 'lunch?'\n"
            "          echo 'lunch?' | overlay chat --user alice --to bob --timeout 10\n"
            "          overlay chat --user bob --json | jq -c 'select(.event == \"message\")'"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--user", type=username_arg, required=True, metavar="NAME",
                        help="chat as this user")
    parser.add_argument("--listen", type=address_arg, default=None, metavar="HOST:PORT",
                        help="accept direct links here (default: do not listen, dial out only)")
    parser.add_argument("--no-punch", action="store_true",
                        help="keep every conversation with another client on its relayed path "
                             "(no hole punching towards a direct link); outgoing connections "
                             "then use ephemeral ports")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--to", type=username_arg, default=None, metavar="CONTACT",
                      help="send one message to CONTACT and exit once it is delivered")
    mode.add_argument("--json", action="store_true",
                      help="print the event stream as JSON lines instead of being interactive")
    parser.add_argument("--message", default=None, metavar="TEXT",
                        help="with --to: the message (default: read standard input)")
    parser.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT,
                        metavar="SECONDS",
                        help="with --to: give up if not delivered within SECONDS, connecting "
                             "included (default %(default)g)")
    parser.set_defaults(run=run_chat, verbose_default=-1, usage_error=parser.error)


def run_chat(args: argparse.Namespace) -> int:
    if args.message is not None and args.to is None:
        usage_error: Callable[[str], NoReturn] = args.usage_error
        usage_error("--message needs --to CONTACT")
    state, server, key = directory_target(args)
    credentials = _credentials(args, state, server)
    text = _message(args) if args.to is not None else None
    _tolerate_unprintable_output()
    return trio.run(partial(_chat, args, state_path=state, server=server, key=key,
                            credentials=credentials, text=text))


def _credentials(args: argparse.Namespace, state: Path, server: ServerList) -> Credentials:
    """The saved session's token if it is this user's on this server, else a password.

    With --password-stdin the first line of stdin is the password in every
    case (with the token tried first), so that a script's input means the
    same thing whether or not a session happens to be saved.
    """
    token = saved_token(state, args.user, server.addresses, time.time())
    password = None
    if args.password_stdin:
        password = _first_line_of_stdin()
    elif token is None:
        password = read_password(args, args.user, confirm=False)
    return Credentials(args.user, password=password, token=token)


def _first_line_of_stdin() -> str:
    """The password line, read byte by byte from fd 0.

    Not ``sys.stdin.readline()``: that buffers ahead, and what follows the
    password (the message, or the commands of a scripted session) must stay
    unread for whoever reads standard input next.
    """
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            break
        line += byte
    if not line:
        raise ConfigError("--password-stdin: standard input is empty")
    password = line.decode("utf-8", errors="replace").rstrip("\r\n")
    if not password:
        raise ConfigError("the password is empty")
    return password


def _message(args: argparse.Namespace) -> str:
    """--message, else all of standard input (its final line end dropped)."""
    if args.message is not None:
        text: str = args.message
    elif sys.stdin.isatty():
        raise ConfigError("nothing to send: give --message TEXT or pipe the message in")
    else:
        data = bytearray()
        while chunk := os.read(0, 65536):
            data += chunk
            if len(data) > 4 * MAX_TEXT_LEN:
                break
        try:
            text = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ConfigError("the message on standard input is not UTF-8 text") from None
    check_text(text)
    return text


def _tolerate_unprintable_output() -> None:
    """A contact's emoji on a non-UTF-8 terminal becomes '?', not a crash."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")


# --- the process ---------------------------------------------------------------------------


async def _chat(args: argparse.Namespace, *, state_path: Path, server: ServerList,
                key: bytes | None, credentials: Credentials, text: str | None) -> int:
    with stop_signals() as signals, StateDir(state_path) as state:
        # A one-shot process leaves at once: it must not be asked to be a supernode, and a
        # direct link it punched would outlive it by milliseconds, so it does not punch.
        lasting = text is None
        punch = lasting and not args.no_punch
        role = EdgeRole(credentials, server, key,
                        EdgeConfig(supernode_ok=lasting, punch=punch),
                        chat_history=state.path / f"chat-{args.user}.sqlite3")
        # One local port for every outgoing connection: the mapping hole punching reuses.
        node_config = NodeConfig(listen=args.listen, outgoing_port=0 if punch else None)
        spec = PeerSpec(state.load_or_create_identity(), node_config,
                        role, control_path=state.control_socket)
        result = 0
        async with run_peer(spec, start=False) as peer, trio.open_nursery() as nursery:
            assert peer.edge is not None and peer.chat is not None
            client = Client(args, server.primary, peer, peer.edge, peer.chat, nursery)
            nursery.start_soon(_stop_on_signal, signals, client)
            if text is not None:
                result = await run_one_shot(client, args.to, text)
            elif args.json:
                result = await run_json_stream(client)
            else:
                result = await run_interactive(
                    client, state.path / f"chat-{args.user}.input-history")
            nursery.cancel_scope.cancel()
    if client.interrupted:
        if text is None:
            return 0
        if client.progress.step in ("connecting", "checking"):
            fate = "nothing was sent or queued"
        else:
            fate = f"it stays queued and is sent the next time overlay chat runs as {args.user}"
        print(f"overlay chat: interrupted before {args.to} acknowledged the message; {fate}",
              file=sys.stderr)
        return 130
    return result


async def _stop_on_signal(signals: trio.abc.ReceiveChannel[int], client: Client) -> None:
    async for _signum in signals:
        client.interrupted = True
        client.nursery.cancel_scope.cancel()
        return
