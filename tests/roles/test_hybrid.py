"""The hybrid design on 127.0.0.1: edge clients attach, talk through supernodes, fail over."""

from __future__ import annotations

from pathlib import Path

import trio

from overlay.directory.client.connection import DirectoryClient
from overlay.directory.server.service import DirectoryConfig
from overlay.net.node import Node
from tests.conftest import make_identity
from tests.roles.conftest import Network, hybrid_network

LIMIT = 20


async def exchange(sender: Node, receiver: Node, peer_id: object, count: int,
                   *, during: object = None) -> list[bytes]:
    """Send ``count`` numbered messages on one channel; return what the receiver got."""
    got: list[bytes] = []

    async def receive() -> None:
        channel = await receiver.accept_channel()
        async with channel:
            while len(got) < count:
                got.append(await channel.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        async with sender.open_channel(peer_id) as channel:  # type: ignore[arg-type]
            for i in range(count):
                await channel.send(b"message %d" % i)
                if during is not None and i == count // 2:
                    await during()  # type: ignore[operator]
            with trio.fail_after(LIMIT):
                await channel.wait_acknowledged()
    return got


async def test_nat_blocked_clients_talk_through_supernodes(network: Network) -> None:
    with trio.fail_after(LIMIT):
        for name in ("sn1", "sn2", "sn3"):
            await network.start_supernode(name)
        await network.register("alice", "bob")
        alice, alice_role = await network.start_client("alice")
        bob, bob_role = await network.start_client("bob")
        assert alice_role.reachable is False and bob_role.reachable is False
        assert alice_role.home is not None and bob_role.home is not None
        bob_id = await alice_role.locate("bob")
        assert bob_id == bob.node_id
        got = await exchange(alice, bob, bob_id, 200)
    assert got == [b"message %d" % i for i in range(200)]
    path = alice_role.path_to(bob.node_id)
    assert path["path"] == "relayed"
    assert path["via"][0] == alice_role.home.hex()
    assert bob_role.home.hex() in path["via"]
    # Routing tables hold supernodes only: edge clients are never routing destinations.
    supernode_ids = {node.node_id for node, _, _ in network.supernodes.values()}
    for node, _role, _scope in network.supernodes.values():
        assert set(node.router.destinations()) <= supernode_ids
    # Each client is attached at its home and its standby.
    attached = [set(node.attached_clients) for node, _, _ in network.supernodes.values()]
    assert sum(alice.node_id in a for a in attached) == 2


async def test_a_reachable_client_gets_a_direct_link(network: Network) -> None:
    with trio.fail_after(LIMIT):
        await network.start_supernode("sn1")
        await network.start_supernode("sn2")
        await network.register("alice", "carol")
        carol, carol_role = await network.start_client("carol", listen=True)
        alice, alice_role = await network.start_client("alice")
        assert carol_role.reachable is True and carol_role.direct_address is not None
        carol_id = await alice_role.locate("carol")
        await alice.wait_until(lambda: carol_id in alice.neighbours)
        got = await exchange(alice, carol, carol_id, 20)
    assert len(got) == 20
    assert alice_role.path_to(carol_id) == {"path": "direct", "via": []}


async def test_failover_to_the_standby_loses_nothing(network: Network) -> None:
    with trio.fail_after(3 * LIMIT):
        for name in ("sn1", "sn2", "sn3"):
            await network.start_supernode(name)
        await network.register("alice", "bob")
        alice, alice_role = await network.start_client("alice")
        bob, bob_role = await network.start_client("bob")
        bob_id = await alice_role.locate("bob")
        old_home = alice_role.home
        names = {node.node_id: name for name, (node, _, _) in network.supernodes.items()}

        async def kill_alices_home() -> None:
            network.kill_supernode(names[old_home])  # type: ignore[index]

        got = await exchange(alice, bob, bob_id, 400, during=kill_alices_home)
    assert got == [b"message %d" % i for i in range(400)]  # every one, once, in order
    assert alice_role.home != old_home
    assert alice_role.failovers >= 1 or bob_role.failovers >= 1


async def test_the_server_promotes_a_reachable_client(tmp_path: Path) -> None:
    config = DirectoryConfig(clients_per_supernode=1, promotion_min_uptime=0.0)
    async with hybrid_network(tmp_path, config) as network:
        with trio.fail_after(LIMIT):
            await network.start_supernode("sn1")
            await network.register("refuser", "willing", "natted", contacts=False)
            _node, refuser = await network.start_client("refuser", listen=True,
                                                        supernode_ok=False)
            _node, natted = await network.start_client("natted")
            willing_node, _willing = await network.start_client("willing", listen=True)
            async with DirectoryClient.connect(network.address, make_identity("observer"),
                                               server_key=network.key) as observer:
                for _ in range(400):  # the promoted client announces itself within moments
                    if len(await observer.supernodes()) >= 2:
                        break
                    await trio.sleep(0.05)
                listed = {node for node, _ in await observer.supernodes()}
        assert willing_node.node_id in listed
        assert not refuser.promoted and not natted.promoted


