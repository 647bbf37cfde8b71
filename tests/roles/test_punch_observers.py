"""Hole punching's observers on 127.0.0.1: one outgoing port, seen the same by the
directory and the home supernode (the lab, tests/lab/test_nat_punch.py, punches
through real NATs)."""

from __future__ import annotations

import trio

from overlay.proto.punch import NatMapping
from tests.roles.conftest import Network

LIMIT = 20


async def test_directory_and_supernode_report_the_outgoing_port(network: Network) -> None:
    with trio.fail_after(LIMIT):
        await network.start_supernode("sn1")
        await network.register("alice")
        node, role = await network.start_client("alice", outgoing_port=0)
        assert role.punch is not None
        await role.punch.wait_observed("supernode")  # the OBSERVED answer
    port = node.outgoing_port
    assert port is not None and port > 0
    assert role.punch.observed == {"directory": ("127.0.0.1", port),
                                   "supernode": ("127.0.0.1", port)}
    # Seen as its own address by both: no NAT, and one candidate (no repeats).
    assert role.punch.mapping() is NatMapping.NONE
    assert role.punch.candidates() == [("127.0.0.1", port)]
    status = role.status().to_json()["punch"]
    assert status == {"enabled": True, "outgoing_port": port, "mapping": "none",
                      "observed": {"directory": f"127.0.0.1:{port}",
                                   "supernode": f"127.0.0.1:{port}"}}


async def test_without_an_outgoing_port_a_client_does_not_punch(network: Network) -> None:
    with trio.fail_after(LIMIT):
        await network.start_supernode("sn1")
        await network.register("bob")
        node, role = await network.start_client("bob")
    assert node.outgoing_port is None and role.punch is None
    assert role.status().to_json()["punch"] is None
