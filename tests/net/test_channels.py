"""Reliable channels between real nodes over TCP, relayed by the nodes between them."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from overlay.errors import ChannelClosed, PeerUnreachable
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.proto.reliable import ChannelConfig, ChannelState
from tests.conftest import make_identity

LIMIT = 20
FAST_CHANNELS = ChannelConfig(keepalive_interval=0.5, probe_interval=0.1, unreachable_after=2.0)


def config() -> NodeConfig:
    return NodeConfig(listen=("127.0.0.1", 0),
                      link=LinkConfig(handshake_timeout=1.0, hello_interval=0.1, dead_after=5),
                      reconnect_initial=0.05, reconnect_max=0.2, channel=FAST_CHANNELS)


@asynccontextmanager
async def line(count: int) -> AsyncIterator[list[Node]]:
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        for i in range(count):
            node = await stack.enter_async_context(Node(make_identity(f"ch{i}"), config()))
            if nodes:
                assert nodes[-1].listen_address is not None
                node.connect(nodes[-1].listen_address)
            nodes.append(node)
        with trio.fail_after(LIMIT):
            for node in nodes:
                others = [n.node_id for n in nodes if n is not node]
                await node.wait_until(lambda node=node, others=others:  # type: ignore[misc]
                                      all(node.router.next_hop(o) for o in others))
        yield nodes


async def test_messages_cross_three_hops_in_order_and_the_channel_closes() -> None:
    async with line(4) as nodes:
        first, last = nodes[0], nodes[-1]
        received: list[bytes] = []

        async def server() -> None:
            async with await last.accept_channel() as channel:
                assert channel.peer == first.node_id
                with contextlib.suppress(ChannelClosed):
                    while True:
                        received.append(await channel.receive())

        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server)
                async with first.open_channel(last.node_id) as channel:
                    for i in range(200):
                        await channel.send(f"message {i}".encode())
                    await channel.wait_acknowledged()
                    stats = channel.statistics()
        assert received == [f"message {i}".encode() for i in range(200)]
        assert stats.messages_sent == 200 and stats.srtt is not None
        assert stats.peer_window > 0 and stats.receive_window == FAST_CHANNELS.receive_window


async def test_a_one_mebibyte_message_arrives_bit_for_bit() -> None:
    payload = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1 << 15))
    assert len(payload) == 1 << 20
    async with line(3) as nodes:
        got: list[bytes] = []

        async def server() -> None:
            async with await nodes[-1].accept_channel() as channel:
                got.append(await channel.receive())

        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server)
                async with nodes[0].open_channel(nodes[-1].node_id) as channel:
                    await channel.send(payload)
                    await channel.wait_acknowledged()
        assert hashlib.sha256(got[0]).digest() == hashlib.sha256(payload).digest()


async def test_a_vanished_peer_is_reported_unreachable_not_silently_dropped() -> None:
    async with line(2) as nodes:
        gone = make_identity("nobody-at-all").node_id
        channel = nodes[0].open_channel(gone)  # no route: every SYN is dropped
        with trio.fail_after(LIMIT), pytest.raises(PeerUnreachable):
            await channel.send(b"hello")
            await channel.wait_acknowledged()


async def test_a_fail_fast_channel_gives_up_at_the_first_report_and_others_ride_it_out() -> None:
    async with line(2) as nodes:
        gone = make_identity("nobody-at-all").node_id
        patient = nodes[0].open_channel(gone)
        hasty = nodes[0].open_channel(gone, fail_fast=True)  # this node reports: no route
        with trio.fail_after(LIMIT), pytest.raises(PeerUnreachable, match="no route"):
            await hasty.wait_open()
        assert patient.core.state is ChannelState.SYN_SENT  # a soft error: it retries
        patient.abort("test over")


async def test_a_closed_channel_s_end_has_reached_the_peer_when_aclose_returns() -> None:
    """A sender that leaves once ``aclose`` returns must not take its FIN with it: the
    peer has seen the end by then (it once returned when the data alone was acknowledged,
    and a peer waiting for the end waited for its keepalive to give up)."""
    async with line(3) as nodes:
        first, last = nodes[0], nodes[-1]
        ended = trio.Event()

        async def server() -> None:
            async with await last.accept_channel() as channel:
                with contextlib.suppress(ChannelClosed):
                    while True:
                        await channel.receive()
                ended.set()

        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server)
                channel = first.open_channel(last.node_id)
                await channel.send(b"the only message")
                await channel.wait_acknowledged()  # as a sender does before it says done
                await channel.aclose()
                assert channel.core.fin_acknowledged  # the peer has the end: leaving is safe
                await ended.wait()
