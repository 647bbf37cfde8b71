"""The lab's one error class (kept apart so the pure plan and the namespace code share it)."""

from __future__ import annotations

from overlay.errors import OverlayError


class LabError(OverlayError):
    """The NAT lab cannot be built, used or torn down here; the message says why in one line."""
