"""What the chat engine tells its user interface: one :class:`ChatEvent` per thing to show.

The terminal, the JSON stream, the demo and the bench all read these from
:attr:`overlay.chat.service.Chat.events`; ``to_json`` is the ``--json`` form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """Something to show: a message, a receipt, a state change, a refusal."""

    kind: str
    """message, queued, sent, delivered, presence, rejected, contact_request,
    contact_accepted, contact_removed, error."""
    peer: str | None = None
    id: bytes | None = None
    text: str | None = None
    at: float | None = None
    latency: float | None = None
    path: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind}
        for key in ("peer", "text", "at", "path", "detail"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.id is not None:
            out["id"] = self.id.hex()
        if self.latency is not None:
            out["latency_ms"] = round(self.latency * 1000, 3)
        return out
