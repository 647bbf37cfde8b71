"""Why a dial failed, in words a user understands."""

from __future__ import annotations

import socket

import pytest
import trio

from overlay.net.transport import (
    TcpTransport,
    connect_from_port,
    describe_connect_error,
    reserve_port,
)


async def test_a_refused_dial_and_an_unknown_host_are_described() -> None:
    with trio.socket.socket() as probe:  # a port nobody listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError) as refused:
        await trio.open_tcp_stream("127.0.0.1", port)
    assert describe_connect_error(refused.value) == "connection refused"
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert describe_connect_error(unknown) == (
        "cannot resolve the host name: name or service not known")
    assert describe_connect_error(trio.TooSlowError()) == "no answer"


async def _listener() -> tuple[trio.SocketListener, tuple[str, int]]:
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    name = listener.socket.getsockname()
    return listener, (str(name[0]), int(name[1]))


async def test_one_local_port_serves_every_destination_and_falls_back_when_taken() -> None:
    reservation = reserve_port("127.0.0.1")
    port = reservation.getsockname()[1]
    transport = TcpTransport(local_port=port)
    first, first_address = await _listener()
    second, second_address = await _listener()
    async with first, second:
        a = await transport.connect(first_address)
        b = await transport.connect(second_address)
        assert isinstance(a, trio.SocketStream) and isinstance(b, trio.SocketStream)
        # Both leave from the reserved port: a NAT would map them to one public port.
        assert a.socket.getsockname()[1] == b.socket.getsockname()[1] == port
        # The same four-tuple again cannot be had: the dial uses an ephemeral port.
        c = await transport.connect(first_address)
        assert isinstance(c, trio.SocketStream)
        assert c.socket.getsockname()[1] != port and transport.fallbacks == 1
        for stream in (a, b, c):
            await stream.aclose()
    reservation.close()


async def test_a_refused_dial_from_the_port_is_an_error_not_a_fallback() -> None:
    reservation = reserve_port("127.0.0.1")
    with trio.socket.socket() as probe:  # a port nobody listens on
        await probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(OSError) as refused:
        await connect_from_port(("127.0.0.1", closed), reservation.getsockname()[1])
    assert describe_connect_error(refused.value) == "connection refused"
    reservation.close()
