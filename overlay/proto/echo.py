"""Ping and traceroute state: the ECHO_REQUESTs in flight and how they end.

Theory of operation
-------------------
``overlay ping`` and ``overlay traceroute`` send one ECHO_REQUEST and wait for
whichever comes first: the ECHO_REPLY from the destination, an error report
(TIME_EXCEEDED or UNREACHABLE) from the hop that dropped the request, or the
end of the caller's patience.  The request's packet id is the key: a reply
carries it in its body, a report names it as the original packet id.  The
first answer settles an echo; a late, duplicate or foreign answer is ignored.

Time is passed in: :meth:`EchoTracker.deadline` is the earliest moment an
echo times out, and :meth:`EchoTracker.expire` settles those whose time has
come.  The node core folds that deadline into its single timer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from overlay.errors import MalformedMessage
from overlay.ids import NodeId
from overlay.proto.forwarding import ErrorReport
from overlay.proto.messages import MessageType, RoutedPacket


class EchoKind(enum.StrEnum):
    """How an echo ended (the ``kind`` field of ``overlay ping --json``)."""

    REPLY = "reply"
    TIME_EXCEEDED = "time_exceeded"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class EchoResult:
    """The outcome of one ECHO_REQUEST: a reply, an error report, or silence."""

    kind: EchoKind
    responder: NodeId | None
    address: str | None
    rtt: float | None
    ttl: int

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "responder": self.responder.hex() if self.responder else None,
            "address": self.address,
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 3),
            "ttl": self.ttl,
        }


@dataclass(frozen=True, slots=True)
class EchoAnswer:
    """What an answering packet says: which echo it settles, how, and from where."""

    echo_id: int
    kind: EchoKind
    responder: NodeId
    address: str | None


def parse_answer(packet: RoutedPacket) -> EchoAnswer | None:
    """The echo a delivered ECHO_REPLY or error report answers, or None if it answers none.

    A reply's body is ``[packet_id, ...]`` with the responder's address third
    (see :func:`~overlay.proto.forwarding.echo_reply_body`); a report's is an
    :class:`~overlay.proto.forwarding.ErrorReport`.  Bodies that do not parse
    answer nothing (they came from a peer; they are not worth a link).
    """
    if packet.type == MessageType.ECHO_REPLY:
        body = packet.body
        if not isinstance(body, list) or not body or not isinstance(body[0], int):
            return None
        address = body[2] if len(body) == 3 else None
        return EchoAnswer(body[0], EchoKind.REPLY, packet.src,
                          address if isinstance(address, str) else None)
    try:
        report = ErrorReport.from_body(packet.body)
    except MalformedMessage:
        return None
    kind = (EchoKind.TIME_EXCEEDED if packet.type == MessageType.TIME_EXCEEDED
            else EchoKind.UNREACHABLE)
    return EchoAnswer(report.original_packet_id, kind, packet.src, report.reporter_address)


@dataclass(frozen=True, slots=True)
class _Pending:
    sent_at: float
    deadline: float
    ttl: int


class EchoTracker:
    """The echoes in flight, keyed by the request's packet id."""

    def __init__(self) -> None:
        self._pending: dict[int, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, packet: RoutedPacket, now: float, patience: float) -> None:
        """``packet`` (an ECHO_REQUEST) was sent at ``now``; give up on it ``patience`` later."""
        self._pending[packet.packet_id] = _Pending(now, now + patience, packet.ttl)

    def cancel(self, echo_id: int) -> None:
        """Forget an echo nobody waits for any more."""
        self._pending.pop(echo_id, None)

    def answer(self, answer: EchoAnswer, now: float,
               fallback_address: str | None) -> EchoResult | None:
        """Settle the echo ``answer`` names; None if it names none in flight.

        ``fallback_address`` is used when the responder did not say where it
        listens (the neighbour's link address, when it is one).
        """
        pending = self._pending.pop(answer.echo_id, None)
        if pending is None:
            return None
        address = answer.address if answer.address is not None else fallback_address
        return EchoResult(answer.kind, answer.responder, address, now - pending.sent_at,
                          pending.ttl)

    def deadline(self) -> float | None:
        """When the next echo times out (None with none in flight)."""
        return min((p.deadline for p in self._pending.values()), default=None)

    def expire(self, now: float) -> list[tuple[int, EchoResult]]:
        """Settle, as timeouts, every echo whose patience ran out by ``now``."""
        done = [(echo_id, p) for echo_id, p in self._pending.items() if now >= p.deadline]
        for echo_id, _ in done:
            del self._pending[echo_id]
        return [(echo_id, EchoResult(EchoKind.TIMEOUT, None, None, None, p.ttl))
                for echo_id, p in done]
