"""Round-trip time estimation and retransmission timeout (RFC 6298), and the link cost.

:class:`RttEstimator` is fed PING/PONG samples by the link core (its SRTT and
RTTVAR are what ``overlay status`` shows) and segment samples by the reliable
channel (which takes its RTO from it).  The first sample sets SRTT = R and
RTTVAR = R/2; later ones smooth with alpha = 1/8 and beta = 1/4, RTTVAR
updated before SRTT, and RTO = SRTT + max(G, K * RTTVAR), clamped to
[min_rto, max_rto].  Backoff doubles the RTO (RFC 6298 section 5.5) until the
next sample recomputes it.

The routing metric is not SRTT: it is :class:`LinkCost`, the floor of the
recent samples, which queueing and jitter do not inflate.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

ALPHA = 1 / 8
BETA = 1 / 4
K = 4


@dataclass(frozen=True, slots=True)
class RttConfig:
    """Timer bounds in seconds.  RFC 6298 says min 1 s; an overlay wants far less."""

    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 60.0
    granularity: float = 0.001


class RttEstimator:
    """SRTT/RTTVAR/RTO state for one path."""

    def __init__(self, config: RttConfig | None = None) -> None:
        self.config = config or RttConfig()
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.latest: float | None = None
        self.samples = 0
        self.rto = self.config.initial_rto

    def observe(self, sample: float) -> None:
        """Fold in one RTT measurement (seconds); negative samples are clamped to 0."""
        sample = max(sample, 0.0)
        self.latest = sample
        self.samples += 1
        if self.srtt is None or self.rttvar is None:
            self.srtt = sample
            self.rttvar = sample / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - sample)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * sample
        self.rto = self._clamp(self.srtt + max(self.config.granularity, K * self.rttvar))

    def backoff(self) -> None:
        """Double the RTO after a timeout (RFC 6298 5.5), up to ``max_rto``."""
        self.rto = self._clamp(self.rto * 2)

    def _clamp(self, rto: float) -> float:
        return min(max(rto, self.config.min_rto), self.config.max_rto)


class LinkCost:
    """A link's cost for routing, from its RTT samples: the floor of the recent ones.

    Queueing and jitter only ever add delay, so the smallest recent sample is the
    best estimate of the path's latency, and a *decrease* is believed at once.  The
    window of samples (``window`` long) makes the estimate forget: a real
    *increase* shows only when the lower samples have left it, which would take a
    whole window, so a level shift is also recognised early: when the last
    ``shift_samples`` samples all lie above the older ones by more than twice
    their spread (measured over at least ``shift_samples`` of them), the older ones
    are dropped.  Jitter cannot do that (its samples stay inside the spread), one
    outlier cannot either (it is one sample), and a real change of more than the
    noise is believed after ``shift_samples``.

    The *noise* is the spread of the window without its largest sample: one
    outlier (typically the first PING, sent while the peer was still busy with
    the handshake) must not widen the hysteresis band of the route it feeds, or
    every better estimate is refused until the outlier leaves the window.
    """

    __slots__ = ("_samples", "shift_samples")

    def __init__(self, window: int, shift_samples: int = 4) -> None:
        if window < 1 or shift_samples < 1:
            raise ValueError("window and shift_samples must be at least 1")
        self._samples: deque[float] = deque(maxlen=window)
        self.shift_samples = shift_samples

    def observe(self, sample: float) -> None:
        """Fold in one RTT sample (seconds; negative ones count as 0)."""
        samples = self._samples
        samples.append(max(sample, 0.0))
        k = self.shift_samples
        if len(samples) < 2 * k:
            return  # the older samples' spread needs a few samples to mean anything
        older = list(samples)[:-k]
        low, high = min(older), _second_largest(older)
        if min(list(samples)[-k:]) > low + 2 * (high - low):
            for _ in older:
                samples.popleft()

    @property
    def samples(self) -> int:
        """How many samples the estimate rests on now."""
        return len(self._samples)

    @property
    def metric_us(self) -> int | None:
        """Half the smallest sample, in whole microseconds (at least 1); None before any."""
        if not self._samples:
            return None
        return max(1, round(min(self._samples) / 2 * 1_000_000))

    @property
    def noise_us(self) -> int:
        """The spread of the samples without the largest, as one-way microseconds."""
        if len(self._samples) < 3:
            return 0
        samples = list(self._samples)
        return round((_second_largest(samples) - min(samples)) / 2 * 1_000_000)


def _second_largest(values: list[float]) -> float:
    """The largest value once one largest is set aside (the only one, if alone)."""
    if len(values) == 1:
        return values[0]
    first = second = -math.inf
    for value in values:
        if value > first:
            first, second = value, first
        elif value > second:
            second = value
    return second
