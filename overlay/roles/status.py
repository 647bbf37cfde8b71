"""What a role shows in ``overlay status``: typed records, and their JSON shape.

The records are what code reads (the chat terminal, the demo, the tests);
``to_json()`` is the wire shape of the role's part of the control socket's
``status`` answer, which ``overlay status --json`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overlay.addresses import Address, format_address
from overlay.ids import NodeId
from overlay.proto.punch import NatMapping


def _rtts_json(rtts: tuple[tuple[NodeId, float], ...]) -> dict[str, float]:
    return {peer.hex(): round(rtt * 1000, 3) for peer, rtt in rtts}


@dataclass(frozen=True, slots=True)
class Path:
    """How packets to a peer travel: over a direct link, or relayed by these supernodes."""

    direct: bool
    via: tuple[NodeId, ...] = ()

    def describe(self, name: Any = None) -> str:
        """``direct`` or ``relayed via a, b`` (``name(node_id)`` names the supernodes)."""
        if self.direct:
            return "direct"
        names = [name(node) if name else node.short for node in self.via]
        return "relayed via " + ", ".join(names) if names else "relayed"

    def to_json(self) -> dict[str, Any]:
        return {"path": "direct" if self.direct else "relayed",
                "via": [node.hex() for node in self.via]}


@dataclass(frozen=True, slots=True)
class PunchProgress:
    """Hole punching towards one peer: where the coordinator is, and how it went."""

    state: str
    attempts: int
    successes: int
    last_error: str | None
    since_s: float
    """Seconds on the conversation's current path (direct or relayed)."""

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "attempts": self.attempts, "successes": self.successes,
                "last_error": self.last_error, "since_s": self.since_s}


@dataclass(frozen=True, slots=True)
class Conversation:
    """An open conversation of an edge client: with whom, and how it travels."""

    peer: NodeId
    username: str | None
    path: Path
    punch: PunchProgress | None = None
    """Hole punching towards this peer, if any."""

    def to_json(self) -> dict[str, Any]:
        return {"peer": self.peer.hex(), "username": self.username, **self.path.to_json(),
                "since_s": None if self.punch is None else self.punch.since_s,
                "punch": None if self.punch is None else self.punch.to_json()}


@dataclass(frozen=True, slots=True)
class PunchStatus:
    """This client's part of ``overlay status`` about hole punching."""

    enabled: bool
    outgoing_port: int | None
    observed: dict[str, Address] = field(default_factory=dict)
    mapping: NatMapping = NatMapping.UNKNOWN

    def to_json(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "outgoing_port": self.outgoing_port,
                "observed": {who: format_address(a) for who, a in self.observed.items()},
                "mapping": self.mapping.value}


@dataclass(frozen=True, slots=True)
class EdgeStatus:
    """An edge client's status (``role`` is "supernode" once it was promoted)."""

    role: str
    username: str
    reachable: bool | None
    reachability: str
    direct_address: Address | None
    home: NodeId | None
    standby: NodeId | None
    failovers: int
    supernodes: tuple[tuple[NodeId, float], ...]
    """Measured supernodes and their RTT in seconds."""
    conversations: tuple[Conversation, ...]
    directory_connected: bool
    server: Address
    """The directory server in use (or tried next: ``--server A --server B`` fails over)."""
    punch: PunchStatus | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "username": self.username,
            "reachable": self.reachable,
            "reachability": self.reachability,
            "direct_address": None if self.direct_address is None
            else format_address(self.direct_address),
            "home": None if self.home is None else self.home.hex(),
            "standby": None if self.standby is None else self.standby.hex(),
            "failovers": self.failovers,
            "supernodes": _rtts_json(self.supernodes),
            "conversations": [c.to_json() for c in self.conversations],
            "directory": "connected" if self.directory_connected else "unreachable",
            "server": format_address(self.server),
            "punch": None if self.punch is None else self.punch.to_json(),
        }


@dataclass(frozen=True, slots=True)
class SupernodeStatus:
    advertise: Address
    mesh_dialled: tuple[NodeId, ...]
    attached_clients: tuple[NodeId, ...]
    candidates: tuple[tuple[NodeId, float], ...]
    """Supernodes measured as mesh candidates and their RTT in seconds."""
    directory_connected: bool
    server: Address
    """The directory server in use (or tried next)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "role": "supernode",
            "advertise": format_address(self.advertise),
            "mesh_dialled": sorted(peer.hex() for peer in self.mesh_dialled),
            "attached_clients": [peer.hex() for peer in self.attached_clients],
            "candidates": _rtts_json(self.candidates),
            "directory": "connected" if self.directory_connected else "unreachable",
            "server": format_address(self.server),
        }
