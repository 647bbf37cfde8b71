"""The control-socket operations of a running node: status, route, echo, send and listen.

``status`` answers the node's status record; ``route`` how a packet to one
destination would leave (``overlay route``); ``echo`` sends one ECHO_REQUEST
(``overlay ping`` and ``overlay traceroute``).
``send``: the client streams ``{"data": bin}`` frames then ``{"end": true}``;
the node sends the bytes as one message on a new reliable channel and answers
once the peer has acknowledged all of it.  ``listen``: the node streams every
message of every channel opened to it as ``{"from": id, "channel": n, "chunk":
bin, "last": bool}`` frames, until the client goes away.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import trio

from overlay.addresses import format_address
from overlay.errors import ChannelClosed, ControlError, OverlayError, TransportError
from overlay.net.control import ControlConnection
from overlay.proto.messages import MAX_TTL, METRIC_INFINITY

if TYPE_CHECKING:
    from overlay.ids import NodeId
    from overlay.net.channels import Channel
    from overlay.net.node import Node

MAX_SEND_BYTES = 64 << 20
CHUNK = 60_000
FRAME_WAIT = 30.0


async def handle_control(node: Node, op: str, request: dict[str, Any],
                         connection: ControlConnection) -> Any:
    """Answer one control request (the node's :data:`~overlay.net.control.ControlHandler`)."""
    if op == "status":
        return node.status()
    if op == "send":
        return await handle_send(node, request, connection)
    if op == "listen":
        return await handle_listen(node, request, connection)
    if op == "route":
        return route_json(node, await resolve_peer(node, str(request.get("dst", ""))))
    if op == "echo":
        dst = await resolve_peer(node, str(request.get("dst", "")))
        ttl, patience = request.get("ttl"), request.get("patience", 2.0)
        if ttl is not None and (type(ttl) is not int or not 1 <= ttl <= MAX_TTL):
            raise ControlError(f"ttl must be an integer from 1 to {MAX_TTL}")
        if type(patience) not in (int, float) or not 0 < patience <= 4:
            raise ControlError("patience must be a number of seconds in (0, 4]")
        return (await node.echo(dst, ttl=ttl, patience=float(patience))).to_json()
    raise ControlError(f"unknown control operation {op!r}")


def route_json(node: Node, destination: NodeId) -> dict[str, Any]:
    """The ``route`` answer: how a packet of ours to ``destination`` would leave now."""
    lookup = node.forwarder.where(destination)
    link = node.neighbours.get(lookup.next_hop) if lookup.next_hop is not None else None
    metric = node.router.metric(destination) if not node.is_edge else None
    return {
        "destination": destination.hex(),
        "kind": lookup.kind.value,
        "next_hop": lookup.next_hop.hex() if lookup.next_hop is not None else None,
        "next_hop_address": format_address(link.address) if link is not None else None,
        "home": lookup.home.hex() if lookup.home is not None else None,
        "metric_us": None if metric is None or metric >= METRIC_INFINITY else metric,
        "srtt_ms": (round(link.core.rtt.srtt * 1000, 3)
                    if link is not None and link.core.rtt.srtt is not None else None),
    }


async def resolve_peer(node: Node, text: str) -> NodeId:
    """A node id (or unique prefix), or a contact's username via the edge role."""
    text = text.strip()
    if node.locate is not None and text and not all(
            c in "0123456789abcdef" for c in text.lower()):
        try:
            return await node.locate(text)
        except OverlayError as exc:
            raise ControlError(f"cannot find {text!r}: {exc}") from None
    return node.resolve_node_id(text)


async def handle_send(node: Node, request: dict[str, Any],
                      connection: ControlConnection) -> dict[str, Any]:
    peer = await resolve_peer(node, str(request.get("dst", "")))
    parts: list[bytes] = []
    total = 0
    while True:
        with trio.fail_after(FRAME_WAIT):
            frame = await connection.receive()
        if not isinstance(frame, dict):
            raise ControlError("expected {data} or {end} frames")
        if frame.get("end") is True:
            break
        data = frame.get("data")
        if not isinstance(data, bytes):
            raise ControlError("a data frame carries bin")
        total += len(data)
        if total > MAX_SEND_BYTES:
            raise ControlError(f"messages are limited to {MAX_SEND_BYTES >> 20} MiB")
        parts.append(data)
    started = trio.current_time()
    try:
        async with node.open_channel(peer, fail_fast=True) as channel:
            await channel.send(b"".join(parts))
            await channel.wait_acknowledged()
            stats = channel.statistics()
    except TransportError as exc:
        raise ControlError(str(exc)) from None
    return {"bytes": total, "acknowledged": True, "to": peer.hex(),
            "seconds": round(trio.current_time() - started, 3),
            "retransmissions": stats.retransmissions}


async def handle_listen(node: Node, request: dict[str, Any],
                        connection: ControlConnection) -> dict[str, Any]:
    lock = trio.Lock()

    async def forward(channel: Channel) -> None:
        async with channel:
            with contextlib.suppress(ChannelClosed):
                while True:
                    message = await channel.receive()
                    chunks = [message[i:i + CHUNK] for i in range(0, len(message), CHUNK)]
                    async with lock:
                        for index, chunk in enumerate(chunks or [b""]):
                            await connection.send({
                                "from": channel.peer.hex(), "channel": channel.core.channel_id,
                                "chunk": chunk, "last": index == max(len(chunks) - 1, 0),
                            })

    async with trio.open_nursery() as nursery:
        while True:
            nursery.start_soon(forward, await node.accept_channel())
