"""Argument types and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import logging
import math
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

from overlay.addresses import Address, parse_address
from overlay.ids import NodeId

DEFAULT_LISTEN = "127.0.0.1:7400"

T = TypeVar("T")


def address_arg(text: str) -> Address:
    try:
        return parse_address(text, default_host="127.0.0.1")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def peer_arg(text: str) -> tuple[NodeId | None, Address]:
    """``HOST:PORT`` or ``NODEID@HOST:PORT`` (the node id pins who must answer)."""
    node_text, sep, address_text = text.rpartition("@")
    node_id = None
    if sep:
        try:
            node_id = NodeId.from_hex(node_text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return node_id, address_arg(address_text)


def add_state_argument(parser: argparse.ArgumentParser) -> None:
    """``--state DIR``: which running node a client command talks to."""
    from overlay.state import default_state_dir

    parser.add_argument("--state", type=Path, default=None, metavar="DIR",
                        help=f"state directory of the local node (default {default_state_dir()})")


def _real_number(text: str, accept: Callable[[float], bool], rule: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not accept(value):  # NaN fails every rule
        raise argparse.ArgumentTypeError(f"{rule}, got {text}")
    return value


def positive_float(text: str) -> float:
    return _real_number(text, lambda value: value > 0, "must be greater than 0")


def non_negative_finite_float(text: str) -> float:
    return _real_number(text, lambda value: 0 <= value < math.inf,
                        "must be 0 or more (and finite)")


def _whole_number(text: str, minimum: int, rule: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{rule}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1, "must be at least 1")


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0, "cannot be negative")


def configure_logging(verbosity: int) -> None:
    """0: INFO, 1: DEBUG (links, routes, dials, sessions), 2+: DEBUG and one line per
    routed packet this node originates, forwards, delivers or drops (the
    ``overlay.packets`` logger); -1: WARNING, -2 and below: ERROR.  Always to stderr."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity)
    if level is None:
        level = logging.DEBUG if verbosity > 0 else logging.ERROR
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("overlay.packets").setLevel(
        logging.DEBUG if verbosity >= 2 else max(level, logging.INFO))


@contextmanager
def stop_signals() -> Iterator[trio.abc.ReceiveChannel[int]]:
    """SIGINT and SIGTERM as a channel, so Ctrl-C becomes an orderly stop, not a traceback."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        yield signals  # type: ignore[misc]


def run_interruptibly(work: Callable[..., Awaitable[T]], *args: Any,
                      clock: trio.abc.Clock | None = None) -> T:
    """``trio.run(work, *args)``, where Ctrl-C (or SIGTERM) cancels ``work`` and, once its
    cleanup is over, raises KeyboardInterrupt (``overlay``'s status 130).

    Left to itself, trio raises KeyboardInterrupt at whatever bytecode is running when
    the signal lands, which may be inside a context manager's own exit: then a node's
    nursery is never closed, or a child process never stopped, and the run can hang
    instead of ending.  A cancellation arrives only at checkpoints, where every
    ``finally`` and ``async with`` runs in full.  A second signal during the cleanup is
    ignored (the cleanups are bounded: children are killed after a grace period).
    """
    async def guarded() -> T:
        result: list[T] = []
        interrupted = False
        with stop_signals() as signals:
            try:
                async with trio.open_nursery() as nursery:
                    async def run_work() -> None:
                        result.append(await work(*args))
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(run_work)
                    async for _ in signals:
                        interrupted = True
                        nursery.cancel_scope.cancel()
                        break
            except BaseExceptionGroup as group:
                if len(group.exceptions) == 1:  # the work's own error, as the work raised it
                    raise group.exceptions[0] from None
                raise
        if interrupted or not result:
            raise KeyboardInterrupt
        return result[0]

    return trio.run(guarded, clock=clock)
