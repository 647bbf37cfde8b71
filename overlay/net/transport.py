"""How a node reaches other nodes: TCP in production, emulated links in the simulator.

The node never opens sockets itself; it asks a :class:`Transport` to dial an
address or to serve one.  Swapping the transport is how the simulator runs the
real node code.
"""

from __future__ import annotations

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
