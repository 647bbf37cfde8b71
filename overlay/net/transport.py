"""How a node reaches other nodes: TCP in production, emulated links in the simulator.

The node never opens sockets itself; it asks a :class:`Transport` to dial an
address or to serve one.  Swapping the transport is how the simulator runs the
real node code.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from overlay.addresses import Address

log = logging.getLogger(__name__)

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
    """Plain TCP with TCP_NODELAY (trio sets it): keepalives must not wait for Nagle.

    ``local_port``: dial every connection from this one local port (SO_REUSEADDR and
    SO_REUSEPORT), so that a NAT maps all of them to one public port, the one the
    observers report and hole punching dials from (docs/roles.md, Hole punching).
    When that port cannot be used for a destination (the same four-tuple is still
    in TIME_WAIT from an earlier connection), the dial falls back to an ephemeral
    port rather than fail.
    """

    def __init__(self, local_port: int | None = None) -> None:
        self.local_port = local_port
        self.fallbacks = 0
        """Dials that could not use ``local_port`` and went out from an ephemeral one."""

    async def connect(self, address: Address) -> trio.abc.Stream:
        host, port = address
        if self.local_port is None:
            return await trio.open_tcp_stream(host, port)
        try:
            return await connect_from_port(address, self.local_port)
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                raise
            self.fallbacks += 1
            log.debug("cannot dial %s from port %d (%s): using an ephemeral port", host,
                      self.local_port, os.strerror(exc.errno))
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


def reusable_socket(family: int = socket.AF_INET) -> trio.socket.SocketType:
    """A TCP socket that may share its local port with the node's other outgoing ones."""
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


async def connect_from_port(address: Address, local_port: int) -> trio.SocketStream:
    """Connect to ``address`` (a numeric IPv4 or IPv6 host) from ``local_port``.

    This is also one side of a TCP simultaneous open: when the peer dials our
    public address from its own port at the same moment, the two SYNs cross and
    one connection results (RFC 9293, section 3.5).
    """
    host, port = address
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                          flags=socket.AI_NUMERICHOST)  # never a lookup
    if not infos:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host}")
    family, _, _, _, sockaddr = infos[0]
    sock = reusable_socket(family)
    try:
        await sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", local_port))
        await sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def reserve_port(host: str = "0.0.0.0") -> socket.socket:
    """A socket bound (never listening) to a free port for outgoing connections: it
    holds the port while the node runs, so that no other program takes it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


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
