"""Hole punching on a real NAT: two NAT-ed clients start relayed and end on a direct link.

Real processes in network namespaces (docs/nat-lab.md), the overlay's own
edge clients (overlay/lab/peer.py with ``--punch``), a directory server and
three supernodes.  What this proves (issue #14):

- behind two easy NATs (port-preserving MASQUERADE, firewall dropping
  unsolicited inbound) a conversation starts relayed, moves to a direct link
  while messages flow, and from then on no supernode forwards a packet of it
  (their ``forwarded`` counters stop); 1,000 messages across the switch
  arrive exactly once, in order;
- when the direct path is cut (iptables drops its packets at one NAT) the
  conversation falls back to the relay and still loses nothing;
- behind two hard NATs (random ports) punching fails, after exactly three
  attempts that the client logs, and the conversation stays relayed and
  delivers everything.

Each peer logs to ``SCRATCH/USER.log``; ``OVERLAY_LAB_KEEP=1`` keeps them after
the run (the scratch directory is ``/tmp/ovl-*``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from overlay.lab.nat_types import Mapping, NatBehaviour, set_nat_behaviour
from tests.lab.conftest import lab_prefix
from tests.lab.test_nat_hybrid import WAIT, Running, running_system

PREFIX = lab_prefix("ovn")


@pytest.fixture(scope="module")
def system(netns_required: None, lab_timings: list[str]) -> Iterator[Running]:
    with running_system(PREFIX, "hole punching", lab_timings, public_clients=0) as running:
        yield running


def nats(system: Running, mapping: Mapping) -> None:
    """Both routers to ``mapping``, each with a firewall (a stray early SYN is dropped,
    not answered with a reset that would close the mapping: docs/nat-lab.md)."""
    for router in ("nat1", "nat2"):
        set_nat_behaviour(system.lab, router, NatBehaviour(mapping, firewall=True))


def forwarded(system: Running) -> dict[str, int]:
    """Every supernode's count of packets relayed for others, from `overlay status`."""
    counts = {}
    for name, _proc in system.supernodes.values():
        result = system.lab.run(name, [sys.executable, "-m", "overlay", "status", "--json",
                                       "--state", str(system.scratch / name)], timeout=WAIT)
        assert result.returncode == 0, result.stderr
        counts[name] = json.loads(result.stdout)["forwarding"]["forwarded"]
    return counts


def go(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()


def events_until(system: Running, proc: subprocess.Popen[bytes], what: str,
                 last: str) -> list[dict[str, Any]]:
    """The events ``proc`` prints up to and including the first ``last`` one."""
    seen = []
    while True:
        event = system.event(proc, what)
        seen.append(event)
        if event["event"] == last:
            return seen


@pytest.mark.netns
def test_easy_nats_end_direct_and_the_relays_stop_carrying_it(system: Running) -> None:
    nats(system, "easy")
    receiver = system.peer("nat2-c1", "erin", "fred", "--receive", "1000", "--punch",
                           listen=False)
    sender = system.peer("nat1-c1", "fred", "erin", "--send", "1000", "--punch",
                         "--interval", "0.01", "--pause-at", "700", "--hold", listen=False)
    assert system.event(receiver, "erin")["reachable"] is False
    assert system.event(sender, "fred")["reachable"] is False
    before = events_until(system, sender, "fred sending", "paused")
    paths = [(e["path"], e["at"]) for e in before if e["event"] == "path"]
    assert paths[0] == ("relayed", 0), paths
    assert paths[-1][0] == "direct" and 0 < paths[-1][1] < 700, paths
    relayed = forwarded(system)
    go(sender)
    held = system.event(sender, "fred sending")
    assert held["event"] == "acknowledged" and held["path"]["path"] == "direct", held
    # The last 300 messages and their acknowledgements went direct: no supernode
    # forwarded a packet meanwhile (read before the channel closes; the goodbyes of
    # a node that leaves may take the relay).
    assert forwarded(system) == relayed
    assert sum(relayed.values()) > 0  # while the first messages did cross supernodes
    go(sender)
    sent = system.event(sender, "fred sending")
    received = system.event(receiver, "erin receiving")
    assert sent["event"] == "sent" and sent["path"]["path"] == "direct", sent
    assert sent["mapping"] == "endpoint-independent", sent
    assert received == {**received, "event": "received", "count": 1000, "in_order": True,
                        "duplicates": 0}


@pytest.mark.netns
def test_cutting_the_direct_path_falls_back_to_the_relay(system: Running) -> None:
    nats(system, "easy")
    receiver = system.peer("nat2-c1", "gina", "hugo", "--receive", "1000", "--punch",
                           listen=False)
    sender = system.peer("nat1-c1", "hugo", "gina", "--send", "1000", "--punch",
                         "--interval", "0.01", "--pause-at", "400", listen=False)
    system.event(receiver, "gina")
    system.event(sender, "hugo")
    before = events_until(system, sender, "hugo sending", "paused")
    assert [e["path"] for e in before if e["event"] == "path"][-1] == "direct", before
    other = system.lab.host("nat2").public_address
    cut = [["-I", "FORWARD", "-s", other, "-j", "DROP"],
           ["-I", "FORWARD", "-d", other, "-j", "DROP"]]
    try:
        for rule in cut:
            system.lab.run("nat1", ["iptables", "-w", "5", *rule], timeout=WAIT, check=True)
        go(sender)
        after = events_until(system, sender, "hugo sending", "sent")
        received = system.event(receiver, "gina receiving")
    finally:
        for rule in cut:
            system.lab.run("nat1", ["iptables", "-w", "5", "-D", *rule[1:]], timeout=WAIT)
    paths = [e["path"] for e in after if e["event"] == "path"]
    assert paths == ["relayed"], after
    assert after[-1]["path"]["path"] == "relayed" and after[-1]["count"] == 1000
    assert received == {**received, "event": "received", "count": 1000, "in_order": True,
                        "duplicates": 0}


@pytest.mark.netns
def test_hard_nats_stay_relayed_after_three_logged_attempts(system: Running) -> None:
    nats(system, "hard")
    try:
        receiver = system.peer("nat2-c1", "ivan", "jane", "--receive", "300", "--punch",
                               "--settle", listen=False)
        sender = system.peer("nat1-c1", "jane", "ivan", "--send", "300", "--punch",
                             "--interval", "0.01", "--settle", listen=False)
        system.event(receiver, "ivan")
        system.event(sender, "jane")
        sent = events_until(system, sender, "jane sending", "sent")[-1]
        received = system.event(receiver, "ivan receiving")
    finally:
        nats(system, "easy")
    assert sent["path"]["path"] == "relayed", sent
    assert sent["mapping"] == "endpoint-dependent", sent
    assert sent["punch"]["state"] == "relayed" and sent["punch"]["attempts"] == 3, sent
    assert received == {**received, "event": "received", "count": 300, "in_order": True,
                        "duplicates": 0}
    logs = [proc.communicate(timeout=WAIT)[1].decode() for proc in (sender, receiver)]
    for log in logs:  # both sides dialled three times, and no more
        assert [f"attempt {n}," for n in (1, 2, 3)] == [
            line.split(": ")[2].split(" dialling")[0] for line in log.splitlines()
            if ": attempt " in line], log
    # The initiator (the smaller node id) said that it gave up and what happens next.
    assert sum("3 attempts failed" in log and "staying relayed" in log for log in logs) == 1
