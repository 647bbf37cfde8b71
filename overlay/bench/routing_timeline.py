"""The reconvergence timeline: delivery and optimal shares over time around the failure.

Kept apart from :mod:`overlay.bench.routing` (which runs the phases) because it
is only wanted for the picture (``--plot``): every ``TIMELINE_STEP`` virtual
seconds it checks every pair's route, which costs a route check per sample.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

TIMELINE_STEP = 0.25
"""Virtual seconds between samples (a twelfth of the default failure detection)."""


async def sample_optimal(share: Callable[[float], float], fail_at: float,
                         series: list[list[float]]) -> None:
    """Append ``[seconds from the failure, share()]`` every step until cancelled."""
    while True:
        t = trio.current_time() - fail_at
        series.append([round(t, 3), round(share(t), 6)])
        await trio.sleep(TIMELINE_STEP)


def delivery_series(sent_at: dict[object, float], delivered: set[object],
                    fail_at: float) -> list[list[float]]:
    """``[start of bin from the failure, share of its packets delivered]`` per step, by
    send time: a packet sent into a failed link counts in the bin it was sent in."""
    bins: dict[int, list[int]] = {}
    for key, at in sent_at.items():
        counts = bins.setdefault(int((at - fail_at) // TIMELINE_STEP), [0, 0])
        counts[0] += 1
        counts[1] += key in delivered
    return [[round(b * TIMELINE_STEP, 3), round(got / sent, 6)]
            for b, (sent, got) in sorted(bins.items())]
