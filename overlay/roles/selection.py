"""Which supernodes to link to: pure decisions over measured round-trip times.

A supernode keeps the ``nearest`` lowest-latency supernodes as mesh
neighbours, plus ``random_extra`` chosen at random among the rest: nearest
neighbours make short routes, the random ones keep the mesh connected when
latency clusters would split it (a small-world graph, as in Kleinberg's and
Skype's designs).  An edge client attaches to the lowest-RTT supernode and
keeps the next one as a standby, so that losing its home costs a switch, not a
search.  Hysteresis keeps a working home unless another is clearly better.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from overlay.ids import NodeId


def choose_mesh(rtts: Mapping[NodeId, float], *, nearest: int, random_extra: int,
                rng: random.Random) -> set[NodeId]:
    """The supernodes to keep links to, from measured RTTs (unmeasured ones are not listed)."""
    ranked = sorted(rtts, key=lambda node: (rtts[node], node))
    chosen = set(ranked[:nearest])
    rest = ranked[nearest:]
    chosen.update(rng.sample(rest, min(random_extra, len(rest))))
    return chosen


@dataclass(frozen=True, slots=True)
class Attachment:
    home: NodeId
    standby: NodeId | None


def choose_attachment(rtts: Mapping[NodeId, float], current: Attachment | None = None, *,
                      switch_ratio: float = 0.7) -> Attachment | None:
    """Home and standby from RTTs; keeps the current home unless one is ``switch_ratio`` x faster.

    Returns None when no supernode was measured.
    """
    if not rtts:
        return None
    ranked = sorted(rtts, key=lambda node: (rtts[node], node))
    home = ranked[0]
    if current is not None and current.home in rtts \
            and rtts[home] > switch_ratio * rtts[current.home]:
        home = current.home  # not clearly better: moving would only churn presence
    standby = next((node for node in ranked if node != home), None)
    return Attachment(home, standby)
