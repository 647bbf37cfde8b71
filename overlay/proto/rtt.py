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

    The *spread* is robust: from the smallest sample to the 90th percentile
    (:func:`_upper`), so the few largest samples of the window (up to one in ten:
    the first PING, answered while the peer was busy with the handshake, a
    scheduling hiccup) neither widen the hysteresis band of the routes this cost
    feeds (:attr:`noise_us`) nor hide a level shift.  A narrower statistic (the
    inter-quartile range, the median absolute deviation) would track the floor's
    own wobble too closely: with exponential jitter the floor of 30 samples moves
    by more than a quartile's spread a few times in every 3,000 samples, which is a
    route flap; the 90th percentile keeps it out (seeded simulations of uniform and
    exponential jitter, 0.5 to 10 ms on 0.2 to 20 ms links, no change after the
    first window in 3,000 samples).  The band is the whole RTT spread, not half of
    it (the one-way spread): the window's floor wobbles by about that much as
    samples come and go, and with half of it the routing bench at 100 nodes and
    1 ms jitter still let two such wobbles through in a minute, each a few route
    changes.

    Outliers can still outnumber what the percentile sets aside (several slow
    PINGs while a node starts), and then the band would refuse a better estimate
    for a whole window: :attr:`recent_high_us` is the largest of the last
    ``shift_samples`` samples (or the window's median, if larger), which the router
    uses to accept a *decrease* whatever the noise once that many consecutive
    samples, and most of the window, agree on it
    (:meth:`~overlay.proto.routing.Router.update_cost`).  The median matters under
    jitter: there the cost in use is an old floor, below most samples, and a few
    low samples in a row would otherwise walk it down, one late change per link,
    which across a few hundred links is a route change every few seconds.
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
        older = sorted(list(samples)[:-k])
        low, high = older[0], _upper(older)
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
        return _one_way_us(min(self._samples))

    @property
    def noise_us(self) -> int:
        """The robust spread of the window's RTT samples (smallest to 90th percentile), in us;
        0 until the window has filled since the link came up (or since a level shift):
        until then nothing has left it, so its floor only ever moves down, which cannot
        flap, and the cost may follow it all the way."""
        if len(self._samples) < (self._samples.maxlen or 0):
            return 0
        ordered = sorted(self._samples)
        return round((_upper(ordered) - ordered[0]) * 1_000_000)

    @property
    def recent_high_us(self) -> int | None:
        """Half the larger of the last ``shift_samples`` samples' maximum and the window's
        median, in us (None with fewer samples): a cost in use above it by more than the
        fixed band is stale, whatever the noise.  The median keeps jitter from passing
        for agreement: a cost that sits near the floor is below most samples."""
        k = self.shift_samples
        if len(self._samples) < k:
            return None
        ordered = sorted(self._samples)
        return _one_way_us(max(*list(self._samples)[-k:], ordered[len(ordered) // 2]))


def _one_way_us(rtt: float) -> int:
    return max(1, round(rtt / 2 * 1_000_000))


def _upper(ordered: list[float]) -> float:
    """The 90th percentile of sorted values (nearest rank below): the largest value once
    the top tenth (at least one, with four or more values) is set aside."""
    n = len(ordered)
    if n < 4:
        return ordered[-1] if n < 2 else ordered[-2]
    return ordered[min(n - 2, int(0.9 * (n - 1)))]
