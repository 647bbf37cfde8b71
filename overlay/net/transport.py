"""How a node reaches other nodes: TCP in production, emulated links in the simulator.

The node never opens sockets itself; it asks a :class:`Transport` to dial an
address or to serve one.  Swapping the transport is how the simulator runs the
real node code.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from overlay.addresses import Address

StreamHandler = Callable[[trio.abc.Stream, Address], Awaitable[None]]


class Transport(Protocol):
    async def connect(self, address: Address) -> trio.abc.Stream:
        """Open a byte stream to ``address``; raises OSError when it cannot."""
        ...

    async def serve(
        self,
        address: Address,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept streams on ``address`` forever, calling ``handler`` in a task for each.

        Reports the bound address (a real port when 0 was asked) via ``task_status``.
        """
        ...


class TcpTransport:
    """Plain TCP with TCP_NODELAY (trio sets it): keepalives must not wait for Nagle."""

    async def connect(self, address: Address) -> trio.abc.Stream:
        host, port = address
        return await trio.open_tcp_stream(host, port)

    async def serve(
        self,
        address: Address,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        host, port = address
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        bound_address: Address = (str(bound[0]), int(bound[1]))

        async def accept(stream: trio.SocketStream) -> None:
            peer = stream.socket.getpeername()
            await handler(stream, (str(peer[0]), int(peer[1])))

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, accept, listeners)
            task_status.started(bound_address)


def describe_connect_error(exc: BaseException) -> str:
    """Why a dial failed, in a few words ("connection refused", "no answer").

    trio wraps the per-address failures of ``open_tcp_stream`` in an OSError
    without an errno; the reason a user needs is the errno of the first one.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):  # the errno is a getaddrinfo code, not errno's
            return f"cannot resolve the host name: {seen.strerror or seen}".lower()
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno).lower()
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[0]
        else:
            seen = seen.__cause__
    if isinstance(exc, trio.TooSlowError | TimeoutError):
        return "no answer"
    return str(exc) or type(exc).__name__
