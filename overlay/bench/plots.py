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


def routing(report: dict[str, Any], graph: Any, directory: Path) -> list[Path]:
    """The routing bench's pictures: ``routing-topology.png`` (links coloured by latency,
    the report's example route over its shortest path), ``routing-stretch.png`` (the
    stretch CDF) and, when the run had a failure phase with a timeline,
    ``routing-reconvergence.png`` (delivery and optimal shares around the failure)."""
    paths = [_routing_topology(report, graph, directory),
             _routing_stretch(report, directory)]
    if report.get("timeline"):
        paths.append(_routing_timeline(report, directory))
    return paths


def _positions(graph: Any) -> dict[Any, tuple[float, float]]:
    """The graph's own ``pos`` (km), or a spring layout with a fixed seed."""
    import networkx as nx

    if all("pos" in graph.nodes[v] for v in graph.nodes):
        return {v: tuple(graph.nodes[v]["pos"]) for v in graph.nodes}
    return dict(nx.spring_layout(graph, seed=1, weight=None))


def _routing_topology(report: dict[str, Any], graph: Any, directory: Path) -> Path:
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    pos = _positions(graph)
    edges = list(graph.edges)
    latencies_ms = [graph.edges[a, b]["latency"] * 1000 for a, b in edges]
    figure = _new_figure()
    figure.set_size_inches(SIZE_INCHES[0], SIZE_INCHES[0] * 0.7)
    axes = figure.subplots()
    norm = Normalize(vmin=min(latencies_ms, default=0), vmax=max(latencies_ms, default=1))
    lines = LineCollection([[pos[a], pos[b]] for a, b in edges], array=latencies_ms,
                           cmap=colormaps["viridis"], norm=norm, linewidths=1.0, alpha=0.8)
    axes.add_collection(lines)
    figure.colorbar(lines, ax=axes, label="link latency (ms, one way)")
    xs, ys = zip(*pos.values(), strict=True) if pos else ((), ())
    axes.scatter(xs, ys, s=8, color="#333333", zorder=3)
    example = report.get("example_route")
    if example:
        for key, colour, width, label in (
                ("shortest_path", "#ff7f0e", 6.0, "shortest path (Dijkstra)"),
                ("path", "#d62728", 2.5, "route taken")):
            path = example[key]
            axes.plot([pos[v][0] for v in path], [pos[v][1] for v in path], color=colour,
                      linewidth=width, alpha=0.8 if key == "path" else 0.45,
                      label=label, zorder=4, solid_capstyle="round")
        for v in (example["source"], example["destination"]):
            axes.annotate(f"n{v}", pos[v], xytext=(4, 4), textcoords="offset points",
                          fontsize=9, zorder=5)
        route = example.get("route_latency_s")
        axes.set_title(f"n{example['source']} to n{example['destination']}: route "
                       + ("none" if route is None else f"{route * 1000:.2f} ms")
                       + f", shortest {example['shortest_latency_s'] * 1000:.2f} ms")
        axes.legend(loc="upper right", fontsize=9)
    axes.autoscale()
    axes.set_aspect("equal", adjustable="datalim")
    axes.set_xticks([])
    axes.set_yticks([])
    figure.suptitle(f"overlay bench routing: {report['topology']}, {report['nodes']} nodes, "
                    f"{report['links']} links")
    return _save(figure, directory, "routing-topology.png")


def _routing_stretch(report: dict[str, Any], directory: Path) -> Path:
    figure = _new_figure()
    axes = figure.subplots()
    cdf = report.get("stretch_cdf") or []
    axes.step([p[0] for p in cdf], [p[1] * 100 for p in cdf], where="post",
              color=OVERLAY_COLOUR, linewidth=2)
    axes.axvline(1.0, color=BASELINE_COLOUR, linestyle="--", label="shortest path (1.0)")
    axes.set_xlabel("stretch (route latency / shortest latency)")
    axes.set_ylabel("pairs with at most this stretch (%)")
    axes.set_ylim(0, 101)
    if cdf:
        top = max(p[0] for p in cdf)
        axes.set_xlim(0.999, max(1.01, top * 1.01))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(f"stretch CDF over {report['pairs']} pairs: "
                   f"{report['optimal_share']:.2%} on a lowest-latency route")
    return _save(figure, directory, "routing-stretch.png")


def _routing_timeline(report: dict[str, Any], directory: Path) -> Path:
    timeline = report["timeline"]
    figure = _new_figure()
    axes = figure.subplots()
    for key, colour, label in (("delivered", OVERLAY_COLOUR, "packets delivered (by send time)"),
                               ("optimal", "#2ca02c", "pairs on a lowest-latency route")):
        series = timeline.get(key) or []
        axes.step([p[0] for p in series], [p[1] * 100 for p in series], where="post",
                  color=colour, linewidth=2, label=label)
    axes.axvline(0.0, color="#d62728", linestyle="--", label="links fail")
    detection = report.get("failure_detection_s")
    if detection is not None:
        axes.axvline(detection, color=BASELINE_COLOUR, linestyle=":",
                     label=f"failure detected ({detection:.2f} s)")
    reconverged = report.get("reconvergence_s")
    if reconverged is not None:
        axes.axvline(reconverged, color="#9467bd", linestyle=":",
                     label=f"reconverged ({reconverged:.2f} s)")
    # The run waits out a quiet period after reconverging (32 s with jitter): show
    # the failure, the recovery and a little after, not the long flat tail.
    marks = [m for m in (detection, reconverged) if m is not None]
    last = max(p[0] for key in ("delivered", "optimal") for p in timeline.get(key) or [[0.0]])
    axes.set_xlim(-1.0, min(last, max([*marks, 0.0]) + 3.0))
    axes.set_xlabel("seconds from the failure (virtual time)")
    axes.set_ylabel("%")
    axes.set_ylim(0, 105)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=9)
    axes.set_title(f"{report['failed_links']} links failed, {report['crashed_nodes']} nodes "
                   "crashed: delivery and route optimality around the failure")
    return _save(figure, directory, "routing-reconvergence.png")
