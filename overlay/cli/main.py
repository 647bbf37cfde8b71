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


def _subcommands() -> tuple[ModuleType, ...]:
    from overlay.cli import (
        account,
        bench,
        chat,
        contacts,
        demo,
        messaging,
        node,
        probe,
        roles,
        server,
        status,
    )

    return (node, status, probe, messaging, server, account, contacts, roles, chat, bench,
            demo)


def build_parser() -> argparse.ArgumentParser:
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (repeat for debug)")
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
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _subcommands():
        module.add_parser(subparsers, common)
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
        parser = build_parser()
        args = parser.parse_args(argv)
        command = f"overlay {args.command}"
        from overlay.cli.common import configure_logging

        configure_logging(args.verbose - args.quiet + getattr(args, "verbose_default", 0))
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
