"""The lab's plan: which hosts exist, what they are called and which addresses they get.

Pure data, no I/O: :mod:`overlay.lab.netns` turns a plan into namespaces.  A
host's name alone determines its kind and addresses (``server``, ``sn3``,
``pub1``, ``nat2``, ``nat2-c1``), so a command started later (``bin/nat-lab
exec``, a test in another process) can find a running lab from the namespace
names without any state file.

Addresses (TEST-NET and shared address space, never routed on the Internet)::

    198.51.100.0/24   public LAN     .1 core router, .10 server, .11.. supernodes,
                                     .21.. public clients
    203.0.113.0/24    "Internet"     .254 core router, .N NAT router N (its WAN side)
    100.64.N.0/24     private LAN N  .1 NAT router N, .10.. its clients
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from overlay.lab.errors import LabError

HostKind = Literal["server", "supernode", "public-client", "nat-client", "nat-router"]

PUBLIC_NET = "198.51.100"  # server, supernodes, public clients
WAN_NET = "203.0.113"  # the NAT routers' public (WAN) addresses
PRIVATE_NET = "100.64"  # 100.64.N.0/24 behind NAT router N
CORE_PUBLIC = f"{PUBLIC_NET}.1"
CORE_WAN = f"{WAN_NET}.254"
SERVER_ADDRESS = f"{PUBLIC_NET}.10"

MAX_SUPERNODES = 10  # 198.51.100.11 .. .20
MAX_PUBLIC_CLIENTS = 100  # 198.51.100.21 .. .120
MAX_NAT_NETWORKS = 50  # 203.0.113.1 .. .50, 100.64.1.0/24 .. 100.64.50.0/24
MAX_CLIENTS_PER_NAT = 100  # 100.64.N.10 .. 100.64.N.109
IFNAMSIZ = 15  # the kernel's limit on interface names (16 bytes with the NUL)

_PREFIX = re.compile(r"[a-z][a-z0-9]{0,7}")
_HOST = re.compile(r"server|sn([1-9][0-9]*)|pub([1-9][0-9]*)|nat([1-9][0-9]*)(?:-c([1-9][0-9]*))?")
HOST_NAMES_HELP = "server, snK, pubK, natN, natN-cM"
CORE = "core"  # the core router's namespace suffix; not a host anyone runs programs on


@dataclass(frozen=True)
class LabConfig:
    """How big a lab to build; ``prefix`` names every namespace and interface of it.

    Two labs with different prefixes coexist.  The prefix is 1-8 lower-case
    letters and digits (no dash), so ``ovl-`` can never match a namespace of
    a lab called ``ovl2`` and every interface name stays within 15 characters.
    """

    prefix: str = "ovl"
    nat_networks: int = 2
    clients_per_nat: int = 1
    supernodes: int = 3
    public_clients: int = 1

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise LabError(f"bad lab prefix {self.prefix!r}: use 1-8 lower-case letters "
                           "and digits, starting with a letter")
        limits = (("nat_networks", self.nat_networks, MAX_NAT_NETWORKS),
                  ("clients_per_nat", self.clients_per_nat, MAX_CLIENTS_PER_NAT),
                  ("supernodes", self.supernodes, MAX_SUPERNODES),
                  ("public_clients", self.public_clients, MAX_PUBLIC_CLIENTS))
        for name, value, most in limits:
            if not 0 <= value <= most:
                raise LabError(f"{name} must be between 0 and {most}, got {value}")


@dataclass(frozen=True)
class Host:
    """One machine of the lab: a network namespace with one interface and a default route.

    ``address`` is where others reach it (a NAT router's is its WAN address);
    ``public_address`` is what a public host sees as the source of its
    connections (for a NAT client: its router's WAN address); ``nat`` is the
    private network a NAT router or NAT client belongs to.
    """

    name: str
    namespace: str
    address: str
    kind: HostKind
    public_address: str
    nat: int | None = None
    lan_address: str | None = None  # NAT routers only: 100.64.N.1

    @property
    def is_public(self) -> bool:
        """Whether hosts on the public side can dial it (NAT routers have no listeners)."""
        return self.kind in ("server", "supernode", "public-client")


def namespace_of(prefix: str, suffix: str) -> str:
    return f"{prefix}-{suffix}"


def _parse(name: str) -> tuple[HostKind, int, int]:
    """``(kind, number, client number)`` of a host name: ``nat2-c3`` is ("nat-client", 2, 3)."""
    match = _HOST.fullmatch(name)
    if match is None:
        raise LabError(f"no such host {name!r}: host names are {HOST_NAMES_HELP}")
    sn, pub, nat, client = (int(g) if g else 0 for g in match.groups())
    kind: HostKind
    if sn:
        kind, number, most, what = "supernode", sn, MAX_SUPERNODES, "supernodes"
    elif pub:
        kind, number, most, what = "public-client", pub, MAX_PUBLIC_CLIENTS, "public clients"
    elif nat:
        kind, number, most, what = "nat-router", nat, MAX_NAT_NETWORKS, "NAT networks"
    else:
        return "server", 0, 0
    if number > most:
        raise LabError(f"no such host {name!r}: a lab has at most {most} {what}")
    if client:
        if client > MAX_CLIENTS_PER_NAT:
            raise LabError(f"no such host {name!r}: "
                           f"a lab has at most {MAX_CLIENTS_PER_NAT} clients per NAT")
        kind = "nat-client"
    return kind, number, client


def host_from_name(prefix: str, name: str) -> Host:
    """The host called ``name`` in lab ``prefix``; LabError if no host can be called that."""
    kind, number, client = _parse(name)
    namespace = namespace_of(prefix, name)
    if kind == "server":
        return Host(name, namespace, SERVER_ADDRESS, kind, SERVER_ADDRESS)
    if kind == "supernode":
        address = f"{PUBLIC_NET}.{10 + number}"
        return Host(name, namespace, address, kind, address)
    if kind == "public-client":
        address = f"{PUBLIC_NET}.{20 + number}"
        return Host(name, namespace, address, kind, address)
    wan = f"{WAN_NET}.{number}"
    if kind == "nat-router":
        return Host(name, namespace, wan, kind, wan, nat=number,
                    lan_address=f"{PRIVATE_NET}.{number}.1")
    return Host(name, namespace, f"{PRIVATE_NET}.{number}.{9 + client}", kind, wan, nat=number)


def plan(config: LabConfig) -> dict[str, Host]:
    """Every host of the lab by name: server, supernodes, public clients, NAT routers, clients."""
    names = ["server"]
    names += [f"sn{k}" for k in range(1, config.supernodes + 1)]
    names += [f"pub{k}" for k in range(1, config.public_clients + 1)]
    names += [f"nat{n}" for n in range(1, config.nat_networks + 1)]
    names += [f"nat{n}-c{m}" for n in range(1, config.nat_networks + 1)
              for m in range(1, config.clients_per_nat + 1)]
    return {name: host_from_name(config.prefix, name) for name in names}


def config_from_namespaces(prefix: str, namespaces: list[str]) -> LabConfig:
    """The smallest config whose plan covers the hosts among ``namespaces`` (a running lab)."""
    most: dict[HostKind, int] = dict.fromkeys(
        ("server", "supernode", "public-client", "nat-router", "nat-client"), 0)
    clients = 0
    for namespace in namespaces:
        head, _, name = namespace.partition("-")
        if head != prefix or name == CORE:
            continue
        try:
            kind, number, client = _parse(name)
        except LabError:
            continue  # not a host name of this version of the lab
        most[kind] = max(most[kind], number)
        clients = max(clients, client)
    return LabConfig(prefix=prefix,
                     nat_networks=max(most["nat-router"], most["nat-client"]),
                     clients_per_nat=clients, supernodes=most["supernode"],
                     public_clients=most["public-client"])


# --- interface names ---------------------------------------------------------
# Inside a host the interface is always eth0 (a NAT router's WAN side: wan0);
# the other ends, in the core and router namespaces, and the bridges carry the
# prefix, so anything that ever appeared in the root namespace is recognisable.


def public_bridge(prefix: str) -> str:
    return f"{prefix}-pub"


def wan_bridge(prefix: str) -> str:
    return f"{prefix}-wan"


def lan_bridge(prefix: str) -> str:
    return f"{prefix}-lan"


def core_port(prefix: str, host: Host) -> str:
    """The core-side end of a public host's or NAT router's cable."""
    return f"{prefix}-{host.name}"


def lan_port(prefix: str, host: Host) -> str:
    """The router-side end of a NAT client's cable."""
    return f"{prefix}-c{host.name.rpartition('-c')[2]}"


HOST_IFACE = "eth0"
ROUTER_WAN_IFACE = "wan0"
