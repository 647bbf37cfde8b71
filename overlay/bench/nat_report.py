"""``overlay bench nat``'s records: one session's figures, per-pairing summaries, the report.

Kept apart from :mod:`overlay.bench.nat` (which needs root and the lab) so the
arithmetic is plain data in, data out.  Which pairings count towards the
"direct where a direct path exists" target is
:func:`~overlay.proto.punch.direct_expected`'s answer for the two NATs'
mappings (easy: endpoint-independent, hard: endpoint-dependent), not a list
kept here.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from overlay.lab.nat_types import Mapping
from overlay.proto.punch import NatMapping, direct_expected

MAPPINGS = {"easy": NatMapping.ENDPOINT_INDEPENDENT, "hard": NatMapping.ENDPOINT_DEPENDENT}


@dataclass(frozen=True)
class Pairing:
    """The sender's NAT, the receiver's, and whether both routers firewall unsolicited inbound."""

    a: Mapping
    b: Mapping
    firewall: bool = True

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}{'' if self.firewall else '-nofw'}"

    @property
    def direct_expected(self) -> bool:
        return direct_expected(MAPPINGS[self.a], MAPPINGS[self.b])


def _median_ms(values: list[float]) -> float | None:
    return round(statistics.median(values) * 1000, 3) if values else None


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (no interpolation: a figure that some session had)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered) - 1e-9)  # the smallest with q of them at or below
    return ordered[min(len(ordered) - 1, max(0, rank - 1))]


@dataclass(frozen=True)
class SessionResult:
    pairing: str
    number: int
    error: str | None = None
    """Why the session produced no figures (a process died, a deadline passed)."""
    direct: bool = False
    time_to_direct_s: float | None = None
    attempts: int = 0
    """Dials the sender made towards its peer."""
    delivered: bool = False
    """Every message arrived exactly once, in order."""
    sent: int = 0
    clean_before: bool = False
    before_rtt_ms: float | None = None
    """Median round trip (send to acknowledgement) in the relayed window."""
    after_rtt_ms: float | None = None
    after_path: str | None = None
    before_bytes: int = 0
    after_bytes: int = 0
    before_forwarded: int = 0
    after_forwarded: int = 0
    mapping: str | None = None
    """The sender's NAT mapping as it classified it from two observers."""

    @classmethod
    def from_events(cls, pairing: str, number: int, session: dict[str, Any],
                    received: dict[str, Any], windows: dict[str, int]) -> SessionResult:
        punch = session.get("punch") or {}
        before, after = session["before"], session["after"]
        return cls(
            pairing, number,
            direct=session["path"]["path"] == "direct",
            time_to_direct_s=session["time_to_direct"],
            attempts=int(punch.get("attempts", 0)),
            delivered=(received["count"] == session["sent"] and received["in_order"]
                       and received["duplicates"] == 0),
            sent=session["sent"], clean_before=session["clean_before"],
            before_rtt_ms=_median_ms(before["rtts"]), after_rtt_ms=_median_ms(after["rtts"]),
            after_path=after["path_end"] if after["path_start"] == after["path_end"] else "mixed",
            before_bytes=windows["before_bytes"], after_bytes=windows["after_bytes"],
            before_forwarded=windows["before_forwarded"],
            after_forwarded=windows["after_forwarded"], mapping=session.get("mapping"))

    def outcome(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        path = (f"direct after {self.time_to_direct_s:.3f} s" if self.direct
                and self.time_to_direct_s is not None else "direct" if self.direct
                else "relayed")
        return (f"{path}, {self.attempts} dial(s), "
                f"{'all delivered' if self.delivered else 'NOT all delivered'}")


@dataclass(frozen=True)
class PairingSummary:
    pairing: str
    direct_expected: bool
    sessions: int
    failed: int
    direct: int
    delivered: int
    time_to_direct_median_s: float | None
    time_to_direct_p90_s: float | None
    attempts_per_success: float | None
    relayed_rtt_ms: float | None
    """Median over sessions of each session's relayed-window median."""
    after_rtt_ms: float | None
    rtt_ratio: float | None
    """after / relayed, over the sessions that went direct (same session, same run)."""
    before_bytes: float | None
    after_bytes: float | None
    before_forwarded: float | None
    after_forwarded: float | None

    @property
    def direct_share(self) -> float | None:
        return self.direct / self.sessions if self.sessions else None


def summarise_pairing(pairing: Pairing, results: list[SessionResult]) -> PairingSummary:
    ok = [r for r in results if r.error is None]
    direct = [r for r in ok if r.direct]
    times = [r.time_to_direct_s for r in direct if r.time_to_direct_s is not None]
    ratios = [r.after_rtt_ms / r.before_rtt_ms for r in direct
              if r.after_rtt_ms and r.before_rtt_ms and r.clean_before]

    def mean(values: list[int]) -> float | None:
        return round(statistics.fmean(values), 1) if values else None

    def median(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return round(statistics.median(present), 3) if present else None

    return PairingSummary(
        pairing.name, pairing.direct_expected, len(results), len(results) - len(ok),
        len(direct), sum(r.delivered for r in ok),
        None if not times else round(statistics.median(times), 3),
        None if not times else round(_quantile(times, 0.9) or 0.0, 3),
        round(sum(r.attempts for r in direct) / len(direct), 2) if direct else None,
        median([r.before_rtt_ms for r in ok]), median([r.after_rtt_ms for r in ok]),
        round(statistics.median(ratios), 3) if ratios else None,
        mean([r.before_bytes for r in ok]), mean([r.after_bytes for r in ok]),
        mean([r.before_forwarded for r in ok]), mean([r.after_forwarded for r in ok]))


@dataclass(frozen=True)
class NatReport:
    repeat: int
    messages: int
    pairings: tuple[PairingSummary, ...]
    sessions: tuple[SessionResult, ...]
    direct_share_where_expected: float | None
    """Sessions ending direct over all sessions of pairings where direct_expected."""
    hard_hard_delivered_share: float | None
    """Sessions behind two hard NATs in which every message arrived, once, in order."""
    stopped_early: bool
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "repeat": self.repeat, "messages": self.messages,
            "pairings": [{**asdict(p), "direct_share": p.direct_share} for p in self.pairings],
            "sessions": [asdict(s) for s in self.sessions],
            "direct_share_where_expected": self.direct_share_where_expected,
            "hard_hard_delivered_share": self.hard_hard_delivered_share,
            "stopped_early": self.stopped_early, "wall_s": round(self.wall_s, 1),
        }


def summarise(pairings: tuple[Pairing, ...], repeat: int, messages: int,
              sessions: list[SessionResult], *, stopped_early: bool,
              wall_s: float) -> NatReport:
    by_name = {p.name: [s for s in sessions if s.pairing == p.name] for p in pairings}
    expected = [s for p in pairings if p.direct_expected for s in by_name[p.name]]
    hard = [s for p in pairings if (p.a, p.b) == ("hard", "hard") for s in by_name[p.name]]
    return NatReport(
        repeat, messages, tuple(summarise_pairing(p, by_name[p.name]) for p in pairings),
        tuple(sessions),
        round(sum(s.direct for s in expected) / len(expected), 4) if expected else None,
        round(sum(s.delivered for s in hard) / len(hard), 4) if hard else None,
        stopped_early, wall_s)
