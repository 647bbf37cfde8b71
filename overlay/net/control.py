"""The local control socket: ``overlay status`` asks a running node over it.

A Unix stream socket in the node's state directory (so only users who can read
that directory can ask), speaking the project's framing: one request frame
``{"v": 1, "op": "status"}`` (or ``"echo"`` with ``dst``, ``ttl`` and
``patience``), one response frame ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``, then the server closes.  Requests must
answer within ``REQUEST_TIMEOUT`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from overlay.errors import ControlError, ProtocolError
from overlay.proto.codec import FrameDecoder, encode_frame, unpack

log = logging.getLogger(__name__)

CONTROL_VERSION = 1
REQUEST_TIMEOUT = 5.0

ControlHandler = Callable[[str, dict[str, Any], "ControlConnection"], Awaitable[Any]]
"""``handler(op, request, connection)``: streaming operations (send, listen) exchange
further frames on ``connection`` before returning their result."""


class ControlConnection:
    """One control connection: frames in, frames out, one decoder for the whole stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._decoder = FrameDecoder()

    async def receive(self) -> Any:
        while (payload := self._decoder.next_payload()) is None:
            data = await self._stream.receive_some(65_536)
            if not data:
                raise ControlError("connection closed before a complete message arrived")
            self._decoder.receive_data(data)
        return unpack(payload)

    async def send(self, obj: Any) -> None:
        await self._stream.send_all(encode_frame(obj))


async def serve_control(
    path: Path,
    handler: ControlHandler,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve requests on ``path`` until cancelled; removes the socket file on exit.

    The caller must hold the state directory's lock, which makes removing a
    stale socket left by a crashed node safe.
    """
    _remove_socket_file(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(os.fspath(path))
        os.chmod(path, 0o600)
        sock.listen(16)
        listener = trio.SocketListener(sock)

        async def serve_one(stream: trio.SocketStream) -> None:
            async with stream:
                connection = ControlConnection(stream)
                try:
                    with trio.fail_after(REQUEST_TIMEOUT):
                        request = await connection.receive()
                    # The operation bounds its own waits: listen, for one, runs until
                    # the client goes away.
                    response = await _answer(request, handler, connection)
                    await connection.send(response)
                except (ProtocolError, ControlError, trio.BrokenResourceError,
                        trio.ClosedResourceError, trio.TooSlowError) as exc:
                    log.debug("control request failed: %s", exc)

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, serve_one, [listener])
            task_status.started()
    finally:
        sock.close()
        _remove_socket_file(path)


def _remove_socket_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def _answer(request: Any, handler: ControlHandler,
                  connection: ControlConnection) -> dict[str, Any]:
    if not isinstance(request, dict) or type(request.get("v")) is not int \
            or request["v"] != CONTROL_VERSION:
        return {"ok": False, "error": f"expected a version {CONTROL_VERSION} request map"}
    op = request.get("op")
    if not isinstance(op, str):
        return {"ok": False, "error": "missing 'op'"}
    try:
        return {"ok": True, "result": await handler(op, request, connection)}
    except ControlError as exc:
        return {"ok": False, "error": str(exc)}


async def control_request(path: Path, op: str, **args: Any) -> Any:
    """Send one request to the node whose control socket is ``path``; its result."""
    try:
        with trio.fail_after(REQUEST_TIMEOUT):
            async with control_session(path, op, **args) as connection:
                return await read_result(path, connection)
    except trio.TooSlowError:
        raise ControlError(
            f"the node at {path} did not answer within {REQUEST_TIMEOUT:g} s"
        ) from None


def _result(path: Path, response: Any) -> Any:
    if not isinstance(response, dict) or not isinstance(response.get("ok"), bool):
        raise ControlError(f"bad answer from the node at {path}")
    if not response["ok"]:
        raise ControlError(str(response.get("error", "unknown error")))
    return response.get("result")


@asynccontextmanager
async def control_session(path: Path, op: str, **args: Any) -> AsyncIterator[ControlConnection]:
    """A streaming operation: the request is sent, then frames flow both ways.

    Read the final answer with :func:`read_result`.
    """
    try:
        stream = await trio.open_unix_socket(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(
            f"no node is running with state directory {path.parent} (no answer on {path})"
        ) from None
    except OSError as exc:
        raise ControlError(f"cannot reach the node at {path}: {exc.strerror or exc}") from None
    async with stream:
        connection = ControlConnection(stream)
        try:
            await connection.send({"v": CONTROL_VERSION, "op": op, **args})
            yield connection
        except (trio.BrokenResourceError, ProtocolError) as exc:
            raise ControlError(f"bad answer from the node at {path}: {exc}") from None


async def read_result(path: Path, connection: ControlConnection) -> Any:
    """The final answer of a streaming operation."""
    try:
        return _result(path, await connection.receive())
    except (trio.BrokenResourceError, ProtocolError) as exc:
        raise ControlError(f"bad answer from the node at {path}: {exc}") from None
