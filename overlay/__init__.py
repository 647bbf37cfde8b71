"""overlay: a peer-to-peer overlay network.

Peers know only their neighbours, measure the latency to them and relay
msgpack messages along the lowest-latency routes.  See docs/ for the
protocol and the architecture; the layers live in ``overlay.proto`` (sans-IO
cores) and ``overlay.net`` (the trio drivers around them).
"""

from __future__ import annotations

__version__ = "0.1.0"
