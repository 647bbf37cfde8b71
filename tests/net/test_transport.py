"""Why a dial failed, in words a user understands."""

from __future__ import annotations

import socket

import pytest
import trio

from overlay.net.transport import describe_connect_error


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
