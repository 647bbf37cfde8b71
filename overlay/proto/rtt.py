"""Round-trip time estimation and retransmission timeout, as in RFC 6298.

The link layer feeds it PING/PONG samples to get a latency metric; the
transport layer (later) feeds it segment samples to get its RTO.  The first
sample sets SRTT = R and RTTVAR = R/2; later ones smooth with alpha = 1/8 and
beta = 1/4, RTTVAR updated before SRTT, and RTO = SRTT + max(G, K * RTTVAR),
clamped to [min_rto, max_rto].  Backoff doubles the RTO (RFC 6298 section 5.5)
until the next sample recomputes it.
"""

from __future__ import annotations

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
