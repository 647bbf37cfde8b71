"""Pictures of benchmark reports (``--plot DIR``): PNG files drawn with matplotlib.

Why pictures: a goodput ratio per relay count or a latency beside its
baseline is read at a glance from bars, not from a table.  The figures are
drawn from a report's JSON form (the same object ``--json`` prints), so a
saved report can be drawn again later and the drawing never reaches into a
running benchmark.

matplotlib is optional (``pip install 'overlay[plot]'``; the test
environment has it): it is imported only here, only when a picture is asked
for, and its absence is one clear error.  The object-oriented API
(``Figure`` + the Agg canvas) is used instead of ``pyplot``: no global state,
no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from overlay.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
SIZE_INCHES = (10.0, 4.5)
OVERLAY_COLOUR = "#1f77b4"
BASELINE_COLOUR = "#999999"


def check_available() -> None:
    """ConfigError, saying how to install it, if matplotlib is missing: asked before a
    long benchmark runs, not after."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("pictures need matplotlib: pip install 'matplotlib>=3.8' into "
                          "this environment (or install overlay[plot])") from None


def _new_figure() -> Figure:
    check_available()
    from matplotlib.figure import Figure

    return Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")


def _save(figure: Figure, directory: Path, name: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {directory}: {exc.strerror}") from None
    path = directory / name
    FigureCanvasAgg(figure)
    try:
        figure.savefig(path, format="png")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    return path


def transport(report: dict[str, Any], directory: Path) -> list[Path]:
    """``transport.png``: goodput and median round trip per relay count, the overlay beside
    the plain trio baseline of the same run, each bar pair labelled with the ratio."""
    hops = report["hops"]
    labels = [f"{h['relays']} relay{'s' if h['relays'] != 1 else ''}" for h in hops]
    figure = _new_figure()
    goodput, latency = figure.subplots(1, 2)
    width = 0.38
    positions = list(range(len(hops)))
    left = [p - width / 2 for p in positions]
    right = [p + width / 2 for p in positions]

    overlay_rate = [h["overlay"]["goodput_msgs_s"] for h in hops]
    plain_rate = [h["baseline"]["goodput_msgs_s"] for h in hops]
    goodput.bar(left, overlay_rate, width, label="overlay", color=OVERLAY_COLOUR)
    goodput.bar(right, plain_rate, width, label="plain trio", color=BASELINE_COLOUR)
    for x, rate, hop in zip(left, overlay_rate, hops, strict=True):
        goodput.annotate(f"{hop['goodput_ratio']:.0%}", (x, rate), ha="center",
                         va="bottom", fontsize=9)
    goodput.set_title(f"goodput, {report['size']}-byte messages")
    goodput.set_ylabel("messages / s")

    overlay_rtt = [h["overlay"]["rtt_p50_ms"] for h in hops]
    plain_rtt = [h["baseline"]["rtt_p50_ms"] for h in hops]
    latency.bar(left, overlay_rtt, width, label="overlay", color=OVERLAY_COLOUR)
    latency.bar(right, plain_rtt, width, label="plain trio", color=BASELINE_COLOUR)
    latency.set_title("round trip, median")
    latency.set_ylabel("ms")

    for axes in (goodput, latency):
        axes.set_xticks(positions, labels)
        axes.legend(loc="upper left")
        axes.grid(axis="y", alpha=0.3)
    mode = "one process per node" if report.get("mode") == "processes" else "one process"
    figure.suptitle(f"overlay bench transport ({mode}): the overlay beside a plain "
                    "forwarder, same run")
    return [_save(figure, directory, "transport.png")]
