"""NAT behaviours a lab router can be switched to: easy or hard mapping, with or without a firewall.

Why: whether two peers behind NAT can end on a direct path depends on how
their NATs map ports and what they do with unsolicited inbound packets
(docs/nat-lab.md, "NAT types"; overlay/proto/punch.py).  A lab router is
built as an *easy* NAT whose FORWARD chain drops unsolicited inbound packets
for its LAN (docs/nat-lab.md, "Topology"); :func:`set_nat_behaviour` rewrites
its rules in place, so a test can try every pairing on one lab:

- mapping ``easy``: MASQUERADE, which keeps a connection's source port when
  it is free, so one local port is seen as the same public port by every
  destination (endpoint-independent mapping);
- mapping ``hard``: MASQUERADE ``--random``, a fresh random public port for
  every connection (endpoint-dependent mapping, as carrier-grade and some
  enterprise NATs do);
- ``firewall`` on: the router also drops, silently, unsolicited packets from
  the WAN for *its own* address, which is where a peer's punching SYN
  arrives (it is addressed to the public address an observer saw); off, as
  built: the router answers them as a host does, with a TCP RST for a closed
  port, which ends that peer's early SYN with "connection refused".

The behaviour is not recorded anywhere but in the router's rules; a lab
attached by another process sees what the rules say (:func:`nat_behaviour`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from overlay.lab.errors import LabError
from overlay.lab.netns import Lab, _command, _tool
from overlay.lab.topology import ROUTER_WAN_IFACE

Mapping = Literal["easy", "hard"]
_FIREWALL_CHAIN = "OVL-WAN-IN"  # the router's own inbound filter, apart from the build's rules


@dataclass(frozen=True)
class NatBehaviour:
    mapping: Mapping = "easy"
    firewall: bool = True

    def __str__(self) -> str:
        return f"{self.mapping}{'' if self.firewall else ', no firewall'}"


def set_nat_behaviour(lab: Lab, router: str, behaviour: NatBehaviour) -> None:
    """Rewrite ``router``'s NAT and inbound-filter rules to ``behaviour``.

    Then the router's connection tracking is flushed (``conntrack -F``, from Debian's
    conntrack package, which bin/nat-lab and the CI install with iproute2 and
    iptables): a mapping made under the old rules would otherwise keep its port.
    Connections alive across the change lose their mappings, so change the
    behaviour before the connections it should govern.
    """
    host = lab.host(router)
    if host.kind != "nat-router":
        raise LabError(f"{host.name} is not a NAT router")
    if behaviour.mapping not in ("easy", "hard"):
        raise LabError(f"unknown NAT mapping {behaviour.mapping!r}: use easy or hard")
    iptables, conntrack = _tool("iptables"), _tool("conntrack")

    def rule(*args: str) -> None:
        _command(lab.command(host, [iptables, "-w", "5", *args]))

    rule("-t", "nat", "-F", "POSTROUTING")
    masquerade = ["-t", "nat", "-A", "POSTROUTING", "-o", ROUTER_WAN_IFACE, "-j", "MASQUERADE"]
    rule(*masquerade, *(["--random"] if behaviour.mapping == "hard" else []))
    existing = _command(lab.command(host, [iptables, "-w", "5", "-S"]))
    if f"-N {_FIREWALL_CHAIN}" in existing.splitlines():
        rule("-D", "INPUT", "-i", ROUTER_WAN_IFACE, "-j", _FIREWALL_CHAIN)
        rule("-F", _FIREWALL_CHAIN)
        rule("-X", _FIREWALL_CHAIN)
    if behaviour.firewall:
        rule("-N", _FIREWALL_CHAIN)
        rule("-A", _FIREWALL_CHAIN, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
             "-j", "RETURN")
        rule("-A", _FIREWALL_CHAIN, "-j", "DROP")
        rule("-I", "INPUT", "-i", ROUTER_WAN_IFACE, "-j", _FIREWALL_CHAIN)
    # Connections mapped under the old rules would keep their ports: forget them.
    _command(lab.command(host, [conntrack, "-F"]))


def nat_behaviour(lab: Lab, router: str) -> NatBehaviour:
    """What ``router``'s rules say it does (as built by :meth:`Lab.up`: easy, no firewall)."""
    host = lab.host(router)
    iptables = _tool("iptables")
    nat_rules = _command(lab.command(host, [iptables, "-w", "5", "-t", "nat", "-S"]))
    filter_rules = _command(lab.command(host, [iptables, "-w", "5", "-S"]))
    mapping: Mapping = "hard" if "--random" in nat_rules else "easy"
    return NatBehaviour(mapping, firewall=f"-j {_FIREWALL_CHAIN}" in filter_rules)
