"""Hole punching on 127.0.0.1, where nothing is in the way but timing.

On loopback a SYN arrives at once: the peer's connect() has usually not
started, so without a listener on the outgoing port it meets a RST.  With
the listener (overlay.roles.punch, "Listening on the outgoing port") the
first SYN is accepted and becomes the direct link.  These tests run two
punching edge clients and three supernodes as real nodes with real sockets,
and check the upgrade in place, one link for both sides, and that a stranger
on the outgoing port gets nothing.
"""

from __future__ import annotations

import socket

import trio

from overlay.net.node import Node
from overlay.roles.edge import EdgeClient
from overlay.roles.punch import PunchService
from tests.roles.conftest import Network

LIMIT = 20
COUNT = 300


async def punching_pair(network: Network) -> tuple[Node, EdgeClient, Node, EdgeClient]:
    for name in ("sn1", "sn2", "sn3"):
        await network.start_supernode(name)
    await network.register("alice", "bob")
    alice, alice_role = await network.start_client("alice", outgoing_port=0)
    bob, bob_role = await network.start_client("bob", outgoing_port=0)
    for role in (alice_role, bob_role):
        assert role.punch is not None and role.punch.listening is not None
    return alice, alice_role, bob, bob_role


def punch_of(role: EdgeClient) -> PunchService:
    assert role.punch is not None
    return role.punch


async def test_a_relayed_conversation_goes_direct_on_one_link_and_loses_nothing(
        network: Network) -> None:
    with trio.fail_after(LIMIT):
        alice, alice_role, bob, bob_role = await punching_pair(network)
        bob_id = await alice_role.locate("bob")
        await bob_role.locate("alice")
        got: list[bytes] = []
        paths: list[str] = []

        async def receive() -> None:
            channel = await bob.accept_channel()
            async with channel:
                while len(got) < COUNT:
                    got.append(await channel.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            async with alice.open_channel(bob_id) as channel:
                for i in range(COUNT):
                    await channel.send(b"message %d" % i)
                    paths.append(alice_role.path_to(bob_id)["path"])
                    if i >= COUNT // 2 and paths[-1] == "relayed":
                        # Keep messages crossing the switch: wait for the upgrade here.
                        await alice.wait_until(lambda: bob_id in alice.neighbours)
                    await trio.sleep(0.005)
                await channel.wait_acknowledged()
    assert paths[0] == "relayed" and paths[-1] == "direct"
    assert got == [b"message %d" % i for i in range(COUNT)]  # once each, in order
    # One TCP connection: each side's link is the other's, seen from the far end.
    a_link, b_link = alice.neighbours[bob.node_id], bob.neighbours[alice.node_id]
    assert a_link.local_address == b_link.address and b_link.local_address == a_link.address
    assert {a_link.local_address[1], b_link.local_address[1]} == {
        alice.outgoing_port, bob.outgoing_port}
    a_state, b_state = punch_of(alice_role).peers[bob.node_id], punch_of(bob_role).peers[
        alice.node_id]
    assert (a_state.successes, b_state.successes) == (1, 1)
    assert a_state.coordinator.state.value == b_state.coordinator.state.value == "direct"
    # On loopback the first SYN usually finds no connect() of the other side's and is
    # accepted; when both connects are in flight at once it is a simultaneous open.
    assert a_state.inbound + b_state.inbound <= 1


async def test_a_stranger_on_the_outgoing_port_is_closed_unread(network: Network) -> None:
    with trio.fail_after(LIMIT):
        alice, alice_role, _bob, bob_role = await punching_pair(network)
        port = alice.outgoing_port
        assert port is not None
        service = punch_of(alice_role)
        for _ in range(50):
            stranger = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with stranger:
                await stranger.connect(("127.0.0.1", port))
                await stranger.send(b"\x00\x00\x00\x05hello")
                try:
                    answer = await stranger.recv(100)
                except ConnectionResetError:  # closed unread: the kernel resets
                    answer = b""
                assert answer == b""  # nothing said
        await alice.wait_until(lambda: service.refused_inbound == 50)
        assert service.peers == {} and not alice.links.links - {
            link for link in alice.neighbours.values()}
        # The client goes on: it still punches with bob afterwards.
        bob_id = await alice_role.locate("bob")
        await bob_role.locate("alice")
        async with alice.open_channel(bob_id) as channel:
            await channel.send(b"hello")
            await alice.wait_until(lambda: bob_id in alice.neighbours)
            await channel.wait_acknowledged()
    assert alice_role.path_to(bob_id)["path"] == "direct"
