"""Entry point of the ``overlay`` command: parse, set up logging, run, report errors.

A user mistake never shows a traceback: an :class:`~overlay.errors.OverlayError`
(even when trio wrapped it in an exception group) becomes one line on stderr and
exit status 1; a bad argument is argparse's usage line and status 2; Ctrl-C
outside a command's own handling is status 130 with one line, however early it
comes: the subcommands (and trio, msgpack, PyNaCl, networkx behind them) are
imported inside :func:`main`, where the interrupt is caught, so this module
imports nothing but the standard library.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from overlay import __version__

if TYPE_CHECKING:
    import argparse


COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("node", "node", "run a peer that links to its neighbours and measures their latency"),
    ("status", "status", "show a running node's id, address and neighbours"),
    ("id", "identity", "print this node's id and public key (from its state directory)"),
    ("ping", "probe", "send overlay echo requests to a node"),
    ("traceroute", "probe", "show the overlay hops to a node"),
    ("route", "probe", "show how this node would send to a destination"),
    ("send", "messaging", "send a message reliably to another node"),
    ("listen", "messaging", "print messages other nodes send to this one"),
    ("server", "server", "run the login/contacts/presence directory server"),
    ("account", "account", "register, log in to or log out of the directory server"),
    ("contacts", "contacts", "ask, accept, decline, remove and list contacts"),
    ("supernode", "roles", "run a supernode: part of the routing mesh, relays for edge clients"),
    ("client", "roles", "run an edge client: log in, attach to the nearest supernode"),
    ("chat", "chat", "chat with contacts: interactive, one message (--to), or a JSON stream"),
    ("bench", "bench", "run a benchmark (routing, transport, directory, chat, hybrid, nat)"),
    ("demo", "demo", "run a server, supernodes and chat users on 127.0.0.1; show a conversation"),
)
"""``(command, module in overlay.cli, one-line help)``.  Only the module of the command
being run is imported (each pulls in trio, the protocol stack and, for some,
networkx): ``overlay --help`` and every other command start without the rest.
tests/cli/test_main.py checks this table against what the modules register."""


def _module(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"overlay.cli.{name}")


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option:
    the top-level options take no values)."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the named command's module is imported and the
    other commands are listed by name and help only (None: every module, for tests)."""
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output: -v debug, -vv also one line per routed packet")
    common.add_argument("-q", "--quiet", action="count", default=0,
                        help="less log output (repeat for errors only)")
    parser = argparse.ArgumentParser(
        prog="overlay",
        description=(
            "A peer-to-peer overlay network: peers know only their neighbours, measure "
            "the latency to them and relay msgpack messages along the lowest-latency routes."
        ),
        epilog="Run `overlay COMMAND --help` for a command's options.  Try: overlay demo",
    )
    parser.add_argument("--version", action="version", version=f"overlay {__version__}")
    # Before the command too (`overlay -v status`); counted apart, because a
    # subcommand's own defaults would overwrite a shared destination.
    parser.add_argument("-v", "--verbose", dest="top_verbose", action="count", default=0,
                        help="more log output: -v debug, -vv also one line per routed "
                             "packet; also after the command")
    parser.add_argument("-q", "--quiet", dest="top_quiet", action="count", default=0,
                        help="less log output (repeat for errors only)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = None if argv is None else _chosen_command(argv)
    loaded: set[str] = set()
    for command, module_name, help_text in COMMANDS:
        if argv is None or command == chosen:
            if module_name not in loaded:
                _module(module_name).add_parser(subparsers, common)
                loaded.add(module_name)
        elif not any(module_name == m and c == chosen for c, m, _ in COMMANDS):
            subparsers.add_parser(command, help=help_text, add_help=False)
    return parser


def _user_error(exc: BaseException) -> BaseException | None:
    """The OverlayError behind ``exc`` if that is all it is, else None (a real bug)."""
    from overlay.errors import OverlayError

    if isinstance(exc, OverlayError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_user_error(inner) for inner in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
    return None


def _is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, even when trio delivered it inside (nested) exception groups, or Python
    wrapped it while importing (a KeyboardInterrupt in a dataclass's ``__set_name__``
    becomes the cause of a RuntimeError)."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_interrupt(inner) for inner in exc.exceptions)
    return exc.__cause__ is not None and _is_interrupt(exc.__cause__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command.  ``argv`` None means this process's own command line: then a
    Ctrl-C after the command is over (the interpreter is exiting) is ignored too."""
    command = "overlay"
    try:
        words = sys.argv[1:] if argv is None else argv
        parser = build_parser(words)
        args = parser.parse_args(words)
        command = f"overlay {args.command}"
        from overlay.cli.common import configure_logging

        configure_logging(args.verbose + args.top_verbose - args.quiet - args.top_quiet
                          + getattr(args, "verbose_default", 0))
        result: int = args.run(args)
    except BaseException as exc:
        if _is_interrupt(exc):
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: same answer
            print(f"{command}: interrupted", file=sys.stderr)
            if argv is None:
                interrupted_exit()
            return 130
        error = _user_error(exc)
        if error is None:
            raise
        print(f"{command}: {error}", file=sys.stderr)
        return 1
    finally:
        if argv is None and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return result


def interrupted_exit() -> None:
    """Exit 130 now.  Not by returning: a Ctrl-C that landed inside ``exec`` of a string
    (dataclasses build their methods so, at import time) leaves CPython's "unhandled
    KeyboardInterrupt" flag set even though it was handled, and the interpreter would
    then kill itself with SIGINT at exit instead of exiting 130."""
    import contextlib
    import os

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(130)
