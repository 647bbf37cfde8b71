"""Nodes over real TCP sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
import random
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from overlay.addresses import Address
from overlay.ids import NodeId
from overlay.net.node import Node, NodeConfig, keep_new_link
from overlay.proto.codec import FrameDecoder
from overlay.proto.handshake import derive_session_keys, ephemeral_public_key
from overlay.proto.link import INITIATOR_CONTEXT, LinkConfig, handshake_transcript
from overlay.proto.messages import (
    Ack,
    Close,
    CloseCode,
    Hello,
    HelloAck,
    Message,
    MessageType,
    Ping,
    RoutedPacket,
    decode_message,
    encode_message,
)
from overlay.proto.sealing import MAX_SEALED_PAYLOAD, Opener
from tests.conftest import make_identity

FAST = LinkConfig(handshake_timeout=0.5, hello_interval=0.05, dead_after=4)
LIMIT = 10  # seconds any single wait in these tests may take before the test fails


def config(**kwargs: object) -> NodeConfig:
    base: dict[str, object] = {"listen": ("127.0.0.1", 0), "link": FAST,
                               "reconnect_initial": 0.05, "reconnect_max": 0.2}
    base.update(kwargs)
    return NodeConfig(**base)  # type: ignore[arg-type]


def listen(node: Node) -> Address:
    assert node.listen_address is not None
    return node.listen_address


async def wait_for(node: Node, predicate: Callable[[], bool]) -> None:
    with trio.fail_after(LIMIT):
        await node.wait_until(predicate)


def linked(node: Node, peer: Node) -> Callable[[], bool]:
    return lambda: peer.node_id in node.neighbours


async def read_message(stream: trio.abc.Stream, decoder: FrameDecoder,
                       opener: Opener | None = None) -> Message | None:
    """Next message from a raw stream (opened with ``opener`` if given), or None at EOF."""
    while (payload := decoder.next_payload()) is None:
        data = await stream.receive_some(65536)
        if not data:
            return None
        decoder.receive_data(data)
    return decode_message(payload if opener is None else opener.open(payload))


async def read_until_eof(stream: trio.abc.Stream, decoder: FrameDecoder | None = None,
                         opener: Opener | None = None) -> list[Message]:
    decoder, out = decoder or FrameDecoder(), []
    if opener is not None:
        decoder.max_payload = MAX_SEALED_PAYLOAD
    with trio.fail_after(LIMIT):
        while (message := await read_message(stream, decoder, opener)) is not None:
            out.append(message)
    return out


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    """Two linked nodes: b dialled a."""
    async with Node(make_identity("a"), config()) as a, Node(make_identity("b"), config()) as b:
        b.connect(listen(a))
        await wait_for(a, linked(a, b))
        await wait_for(b, linked(b, a))
        yield a, b


async def test_two_nodes_become_neighbours_and_measure_rtt() -> None:
    async with pair() as (a, b):
        await wait_for(a, lambda: a.neighbours[b.node_id].core.rtt.samples >= 2)
        stats = a.statistics()
        [neighbour] = stats.neighbours
        assert neighbour.peer_id == b.node_id and neighbour.direction == "in"
        assert neighbour.srtt is not None and neighbour.srtt > 0
        status = b.status()
        assert status["neighbours"][0]["id"] == a.node_id.hex()
        assert status["neighbours"][0]["direction"] == "out"


async def test_impostor_with_a_stolen_public_key_is_refused_with_a_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    victim, mallory = make_identity("victim"), make_identity("mallory")
    async with Node(make_identity("a"), config()) as a:
        stream = await trio.open_tcp_stream(*listen(a))
        # Mallory does the X25519 part honestly (so she can read the refusal, which is
        # sealed) but cannot sign as the victim.
        secret = b"\x07" * 32
        await stream.send_all(encode_message(Hello(victim.public_key,
                                                   ephemeral_public_key(secret))))
        decoder = FrameDecoder()
        hello_ack = await read_message(stream, decoder)
        assert isinstance(hello_ack, HelloAck)
        forged = mallory.sign(handshake_transcript(
            INITIATOR_CONTEXT, victim.public_key, ephemeral_public_key(secret),
            hello_ack.public_key, hello_ack.ephemeral_key))
        await stream.send_all(encode_message(Ack(forged)))
        keys = derive_session_keys(
            initiator=True, own_secret=secret, initiator_key=victim.public_key,
            initiator_ephemeral=ephemeral_public_key(secret),
            responder_key=hello_ack.public_key, responder_ephemeral=hello_ack.ephemeral_key)
        replies = await read_until_eof(stream, decoder, Opener(keys.receive))
        assert len(replies) == 1 and isinstance(replies[0], Close)
        assert replies[0].code == CloseCode.BAD_SIGNATURE
        assert victim.node_id.hex() in replies[0].reason
        assert "private key" in replies[0].reason
        assert a.neighbours == {} and a.statistics().links_refused == 1
    assert any("bad signature" in r.getMessage() for r in caplog.records)


async def test_dialling_an_impostor_is_refused_too() -> None:
    """The dialler checks the responder's signature: a fake node cannot pose as another."""
    victim, mallory = make_identity("victim"), make_identity("mallory")
    refusals: list[Message] = []
    refused = trio.Event()

    async def fake_node(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        hello = await read_message(stream, decoder)
        assert isinstance(hello, Hello)
        await stream.send_all(encode_message(HelloAck(victim.public_key, b"\x09" * 32,
                                                      mallory.sign(b"anything"))))
        refusals.extend(await read_until_eof(stream))
        refused.set()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, fake_node, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        async with Node(make_identity("a"), config()) as a:
            a.connect(("127.0.0.1", port), expected_peer=victim.node_id)
            with trio.fail_after(LIMIT):
                await refused.wait()
            assert a.neighbours == {}
        nursery.cancel_scope.cancel()
    assert isinstance(refusals[0], Close) and refusals[0].code == CloseCode.BAD_SIGNATURE


def hostile_inputs(seed: int, count: int) -> list[bytes]:
    """Random bytes, mutated valid frames and oversized prefixes, from a seeded RNG."""
    rng = random.Random(seed)
    valid = [encode_message(Hello(b"k" * 32, b"n" * 32)), encode_message(Ping(3))]
    out = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            out.append(rng.randbytes(rng.randint(1, 200)))
        elif kind == 1:
            frame = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 4)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
            out.append(bytes(frame))
        else:
            out.append(struct.pack(">I", rng.randint(65536, 2**32 - 1)) + rng.randbytes(10))
    return out


async def test_hostile_bytes_close_only_that_connection_and_other_links_keep_pinging() -> None:
    async with pair() as (a, b):
        link = a.neighbours[b.node_id]
        pongs_before = link.core.counters.pongs_received
        for data in hostile_inputs(seed=1234, count=60):
            stream = await trio.open_tcp_stream(*listen(a))
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(data)  # the node may already have hung up: fine
            with trio.fail_after(LIMIT):
                # The node closes the connection (after a CLOSE frame, or after its
                # handshake timeout when the bytes were only part of a frame).
                try:
                    while await stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass
            await stream.aclose()
        await wait_for(a, lambda: link.core.counters.pongs_received >= pongs_before + 5)
        assert a.neighbours.get(b.node_id) is link, "the good link must survive"
        assert a.statistics().links_refused == 60


@pytest.mark.parametrize(
    ("opening", "expected_code"),
    [
        (encode_message(Ping(1)), CloseCode.PROTOCOL_ERROR),  # valid message, wrong moment
        (struct.pack(">I", 70000), CloseCode.PROTOCOL_ERROR),  # oversized length prefix
        (b"\x00\x00\x00\x10\x94\x01", CloseCode.TIMEOUT),  # truncated frame, then silence
        (b"", CloseCode.TIMEOUT),  # nothing at all: stalled handshake
    ],
)
async def test_misbehaving_connection_is_closed_with_a_reason(
    opening: bytes, expected_code: int,
) -> None:
    async with Node(make_identity("a"), config()) as a:
        stream = await trio.open_tcp_stream(*listen(a))
        await stream.send_all(opening)
        replies = await read_until_eof(stream)
        assert [type(r) for r in replies] == [Close]
        assert isinstance(replies[0], Close) and replies[0].code == expected_code
        assert replies[0].reason


async def test_simultaneous_dials_leave_exactly_one_link() -> None:
    async with Node(make_identity("a"), config()) as a, Node(make_identity("b"), config()) as b:
        a.connect(listen(b))
        b.connect(listen(a))
        await wait_for(a, linked(a, b))
        await wait_for(b, linked(b, a))
        await trio.sleep(0.5)  # let any duplicate be resolved
        link_a, link_b = a.neighbours[b.node_id], b.neighbours[a.node_id]
        assert {link_a.direction, link_b.direction} == {"in", "out"}  # the same connection
        smaller = min(a.node_id, b.node_id)
        dialler = a if link_a.direction == "out" else b
        assert dialler.node_id == smaller
        await trio.sleep(0.5)
        assert a.neighbours[b.node_id] is link_a, "the kept link must be stable"


def test_duplicate_rule_is_symmetric() -> None:
    low, high = NodeId(b"\x00" * 16), NodeId(b"\xff" * 16)
    # Opposite directions: both ends keep the link dialled by the smaller id (low).
    assert keep_new_link(low, high, existing_outgoing=False, new_outgoing=True)
    assert keep_new_link(high, low, existing_outgoing=True, new_outgoing=False)
    assert not keep_new_link(low, high, existing_outgoing=True, new_outgoing=False)
    assert not keep_new_link(high, low, existing_outgoing=False, new_outgoing=True)
    # Same direction: keep the older.
    assert not keep_new_link(low, high, existing_outgoing=True, new_outgoing=True)


async def test_link_comes_back_after_the_neighbour_restarts() -> None:
    a_identity = make_identity("a")
    async with Node(make_identity("b"), config()) as b:
        async with Node(a_identity, config()) as a:
            port = listen(a)
            b.connect(port)
            await wait_for(b, linked(b, a))
        await wait_for(b, lambda: a_identity.node_id not in b.neighbours)
        async with Node(a_identity, config(listen=port)) as a:
            await wait_for(b, linked(b, a))
            await wait_for(a, linked(a, b))


async def test_connecting_to_ourselves_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with Node(make_identity("a"), config()) as a:
        a.connect(listen(a))
        await wait_for(a, lambda: a.statistics().links_refused >= 2)
        assert a.neighbours == {}
    assert any("self connection" in r.getMessage() for r in caplog.records)


async def test_listening_on_a_busy_port_is_a_config_error() -> None:
    from overlay.errors import ConfigError

    async with Node(make_identity("a"), config()) as a:
        with pytest.raises(BaseException) as info:  # unwrapped below
            async with Node(make_identity("b"), config(listen=listen(a))):
                pass
        error = info.value
        while isinstance(error, BaseExceptionGroup):
            [error] = error.exceptions
        assert isinstance(error, ConfigError) and "cannot listen" in str(error)


async def test_node_stops_promptly_and_closes_links_gracefully() -> None:
    async with pair() as (a, b):
        link = b.neighbours[a.node_id]
    assert link.core.down is not None
    assert link.core.down.reason == "node shutting down"


@asynccontextmanager
async def chain(count: int) -> AsyncIterator[list[Node]]:
    """``count`` nodes in a line over TCP, each dialling the previous one, routes converged."""
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        for i in range(count):
            node = await stack.enter_async_context(Node(make_identity(f"chain{i}"), config()))
            if nodes:
                node.connect(listen(nodes[-1]))
            nodes.append(node)
        for node in nodes:
            others = [n.node_id for n in nodes if n is not node]
            await wait_for(node, lambda node=node, others=others:  # type: ignore[misc]
                           all(node.router.next_hop(o) is not None for o in others))
        yield nodes


async def test_routes_span_a_line_and_echo_crosses_it() -> None:
    async with chain(4) as nodes:
        first, last = nodes[0], nodes[-1]
        assert first.router.next_hop(last.node_id) == nodes[1].node_id
        result = await first.echo(last.node_id)
        assert result.kind == "reply" and result.responder == last.node_id
        assert result.address == f"127.0.0.1:{listen(last)[1]}"
        # The middle nodes forward the request one way and the reply the other.
        assert [n.forwarder.counters.forwarded for n in nodes] == [0, 2, 2, 0]
        status = first.status()
        assert {r["destination"] for r in status["routes"]} == {n.node_id.hex() for n in nodes[1:]}


async def test_ttl_expiry_is_reported_by_the_hop_where_it_ran_out() -> None:
    async with chain(4) as nodes:
        result = await nodes[0].echo(nodes[3].node_id, ttl=2)
        assert result.kind == "time_exceeded" and result.responder == nodes[2].node_id
        assert result.address == f"127.0.0.1:{listen(nodes[2])[1]}"


async def test_unknown_destination_is_unreachable_at_once() -> None:
    async with chain(2) as nodes:
        result = await nodes[0].echo(make_identity("nobody").node_id)
        assert result.kind == "unreachable" and result.responder == nodes[0].node_id


async def test_routes_are_retracted_when_a_node_leaves() -> None:
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for i in range(3):
            node = await stack.enter_async_context(Node(make_identity(f"r{i}"), config()))
            if nodes:
                node.connect(listen(nodes[-1]))
            nodes.append(node)
        a, _, c = nodes
        await wait_for(a, lambda: a.router.next_hop(c.node_id) is not None)
        await stack.aclose()  # all stop; a stops last and must have seen c retracted or gone
    assert a.router.next_hop(c.node_id) is None


async def test_data_packets_reach_a_registered_handler() -> None:
    async with chain(3) as nodes:
        received: list[RoutedPacket] = []
        arrived = trio.Event()

        def handler(packet: RoutedPacket) -> None:
            received.append(packet)
            arrived.set()

        nodes[2].register_handler(MessageType.DATA, handler)
        sent = nodes[0].send_packet(MessageType.DATA, nodes[2].node_id, b"across")
        with trio.fail_after(LIMIT):
            await arrived.wait()
        assert received[0].body == b"across" and received[0].packet_id == sent.packet_id
        assert received[0].ttl == sent.ttl - 1
