"""``overlay status`` as JSON: the node's typed records turned into plain values.

The records (:class:`~overlay.net.node.NodeStatistics`, the link and core
statistics in it) are what code and tests read; this module is only the wire
shape of the control socket's ``status`` answer, which scripts read with
``overlay status --json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from overlay.ids import NodeId
from overlay.net.dialer import DialerStatistics
from overlay.net.link import LinkStatistics
from overlay.proto.messages import METRIC_INFINITY
from overlay.proto.node import CoreStatistics


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """A point-in-time record of a node: its links, its core, and what I/O dropped."""

    node_id: NodeId
    listen: str | None
    uptime: float
    neighbours: tuple[LinkStatistics, ...]
    dialers: tuple[DialerStatistics, ...]
    """Every address the node keeps a link to (``--connect``, an edge client's supernode)."""
    pending: tuple[LinkStatistics, ...]
    core: CoreStatistics
    links_refused: int
    dropped_queue_full: int
    dropped_unencodable: int


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)



class RoleStatus(Protocol):
    """A role's status record (:class:`~overlay.roles.status.EdgeStatus`, ...)."""

    def to_json(self) -> dict[str, Any]: ...

def link_json(stats: LinkStatistics) -> dict[str, Any]:
    return {
        "id": stats.peer_id.hex() if stats.peer_id else None,
        "address": stats.address,
        "direction": stats.direction,
        "state": stats.state,
        "srtt_ms": _ms(stats.srtt),
        "rttvar_ms": _ms(stats.rttvar),
        "metric_us": stats.metric_us,
        "rtt_samples": stats.rtt_samples,
        "pings_sent": stats.pings_sent,
        "pongs_received": stats.pongs_received,
        "missed_pongs": stats.missed_pongs,
        "bytes_sent": stats.bytes_sent,
        "bytes_received": stats.bytes_received,
    }


def dialer_json(stats: DialerStatistics) -> dict[str, Any]:
    return {
        "address": stats.address,
        "id": stats.peer_id.hex() if stats.peer_id else None,
        "state": stats.state.value,
        "for_s": round(stats.for_s, 3),
        "failures": stats.failures,
        "last_error": stats.last_error,
        "next_attempt_in_s": (None if stats.next_attempt_in_s is None
                              else round(stats.next_attempt_in_s, 3)),
    }


def node_status_json(stats: NodeStatistics, role: dict[str, Any] | None) -> dict[str, Any]:
    """The ``status`` answer; ``role`` is the running role's part (None for a plain node)."""
    core = stats.core
    return {
        "node_id": stats.node_id.hex(),
        "listen": stats.listen,
        "uptime_s": round(stats.uptime, 3),
        "neighbours": [link_json(s) for s in stats.neighbours],
        "pending": [link_json(s) for s in stats.pending],
        "configured": [dialer_json(d) for d in stats.dialers],
        "routes": [
            {
                "destination": r.destination.hex(),
                "next_hop": r.next_hop.hex() if r.next_hop else None,
                "metric_us": None if r.metric >= METRIC_INFINITY else r.metric,
                "seqno": r.seqno,
            }
            for r in core.routes
        ],
        "links_accepted": core.links_accepted,
        "links_refused": stats.links_refused,
        "forwarding": {**core.forwarding, "dropped_queue_full": stats.dropped_queue_full,
                       "dropped_unencodable": stats.dropped_unencodable},
        "routing": core.routing,
        "edge": core.edge,
        "home": None if core.home is None else core.home.hex(),
        "attached_clients": [peer.hex() for peer in core.attached],
        "locations": core.locations,
        "role": role,
    }
