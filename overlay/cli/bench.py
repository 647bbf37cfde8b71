"""``overlay bench ...``: benchmarks that measure, in one run, a figure and its baseline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import trio
import trio.testing

from overlay.cli.common import positive_float, positive_int
from overlay.errors import ConfigError
from overlay.sim import topology
from overlay.sim.routing_bench import BenchConfig, RoutingReport, run


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    bench = subparsers.add_parser(
        "bench", parents=[common], help="run a benchmark (routing)",
        description="Benchmarks.  Each prints its figures; --json puts them on stdout.",
    )
    kinds = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    routing = kinds.add_parser(
        "routing", parents=[common], help="routing convergence and route quality in the simulator",
        description=(
            "Run N real nodes on an emulated network in virtual time: measure the time to "
            "converge, the share of node pairs on a lowest-latency route and the stretch "
            "(route latency / shortest latency by Dijkstra on the true link latencies), "
            "routing loops, control traffic, and, with --fail-links, reconvergence and "
            "delivery while links fail under traffic.  Reproducible from --seed."
        ),
        epilog=("topologies: " + ", ".join(topology.KINDS) + ", or a GraphML/GML/node-link "
                "JSON file (per-edge latency attribute, or latitude/longitude per node)"),
    )
    routing.add_argument("--nodes", type=positive_int, default=100, metavar="N",
                         help="number of nodes for a generated topology (default 100)")
    routing.add_argument("--topology", default="waxman", metavar="KIND|FILE",
                         help="generator name or topology file (default waxman)")
    routing.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    routing.add_argument("--fail-links", type=int, default=0, metavar="K",
                         help="fail K links at once under traffic and measure recovery")
    routing.add_argument("--crash-nodes", type=int, default=0, metavar="K",
                         help="crash K nodes (silently, as in a power cut) with the failed links")
    routing.add_argument("--latency-attr", default="latency", metavar="NAME",
                         help="edge attribute holding latency, for topology files")
    routing.add_argument("--latency-unit", choices=sorted(topology.LATENCY_UNITS), default="s",
                         help="unit of --latency-attr (default s)")
    routing.add_argument("--jitter", type=float, default=0.0, metavar="SECONDS",
                         help="random extra delay per message, up to this (RTT noise)")
    routing.add_argument("--hello-interval", type=positive_float, default=1.0, metavar="S",
                         help="keepalive interval (default 1)")
    routing.add_argument("--update-interval", type=positive_float, default=16.0, metavar="S",
                         help="periodic route update interval (default 16)")
    routing.add_argument("--json", action="store_true", help="print the figures as JSON")
    routing.set_defaults(run=run_routing, verbose_default=-2)

    transport = kinds.add_parser(
        "transport", parents=[common],
        help="reliable channels on 127.0.0.1 against plain trio TCP, same run",
        description=(
            "Start real nodes on 127.0.0.1 and measure a reliable channel's goodput "
            "(messages/s, MB/s) and round-trip latency (p50/p99) across 0, 1 and 3 relay "
            "hops, beside a plain trio TCP stream (through plain trio forwarders for the "
            "relayed cases) carrying the same messages in the same run, as ratios."
        ),
    )
    transport.add_argument("--hops", type=_hops_arg, default=[0, 1, 3], metavar="H,H,...",
                           help="relay counts to measure (default 0,1,3)")
    transport.add_argument("--size", type=positive_int, default=1024, metavar="BYTES",
                           help="message size (default 1024)")
    transport.add_argument("--count", type=positive_int, default=5000, metavar="N",
                           help="messages for goodput (default 5000)")
    transport.add_argument("--pings", type=positive_int, default=300, metavar="N",
                           help="round trips for latency (default 300)")
    transport.add_argument("--json", action="store_true", help="print the figures as JSON")
    transport.set_defaults(run=run_transport, verbose_default=-2)


def _hops_arg(text: str) -> list[int]:
    try:
        hops = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected relay counts like 0,1,3, got {text!r}") from None
    if not hops or any(h < 0 or h > 8 for h in hops):
        raise argparse.ArgumentTypeError("relay counts must be between 0 and 8")
    return hops


def run_transport(args: argparse.Namespace) -> int:
    from overlay.bench import transport as bench_transport

    bar = _ProgressBar()
    results = trio.run(bench_transport.run, args.hops, args.size, args.count, args.pings, bar)
    bar.done()
    if args.json:
        json.dump([r.to_json() for r in results], sys.stdout, indent=2)
        print()
        return 0
    print(f"{args.count} messages of {args.size} bytes; {args.pings} round trips")
    print(f"{'relays':>6}  {'':8} {'msgs/s':>9} {'MB/s':>8} {'rtt p50':>9} {'rtt p99':>9}")
    for r in results:
        for label, f in (("overlay", r.overlay), ("plain", r.baseline)):
            print(f"{r.relays if label == 'overlay' else '':>6}  {label:8} "
                  f"{f.goodput_msgs_s:>9.0f} {f.goodput_mb_s:>8.2f} "
                  f"{f.rtt_p50_ms:>7.3f}ms {f.rtt_p99_ms:>7.3f}ms")
        extra = ""
        if r.rtt_p50_added_per_relay_us is not None:
            extra = f"; {r.rtt_p50_added_per_relay_us:.0f} us more round trip per relay"
        print(f"{'':6}  goodput {r.goodput_ratio:.1%} of plain trio{extra}")
    return 0


class _ProgressBar:
    """One self-rewriting line on a terminal; occasional plain lines otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, int] = ("", -1)

    def __call__(self, phase: str, fraction: float) -> None:
        percent = int(fraction * 100)
        step = percent if self.tty else percent // 25 * 25
        if (phase, step) == self.last:
            return
        self.last = (phase, step)
        if self.tty:
            bar = "#" * (percent // 5)
            print(f"\r{phase:<16} [{bar:<20}] {percent:3d}%", end="", file=sys.stderr, flush=True)
        else:
            print(f"{phase}: {percent}%", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _load_graph(args: argparse.Namespace) -> tuple[Any, str]:
    if args.topology in topology.KINDS:
        return topology.generate(args.topology, args.nodes, args.seed), args.topology
    path = Path(args.topology)
    if not path.suffix and not path.exists():
        raise ConfigError(f"unknown topology {args.topology!r}: not one of "
                          f"{', '.join(topology.KINDS)}, and no such file")
    graph = topology.load(path, latency_attr=args.latency_attr, latency_unit=args.latency_unit)
    return graph, path.name


def run_routing(args: argparse.Namespace) -> int:
    graph, name = _load_graph(args)
    if args.fail_links < 0 or args.crash_nodes < 0:
        raise ConfigError("--fail-links and --crash-nodes cannot be negative")
    config = BenchConfig(seed=args.seed, fail_links=args.fail_links, crash_nodes=args.crash_nodes,
                         jitter=args.jitter,
                         hello_interval=args.hello_interval,
                         update_interval=args.update_interval)
    bar = _ProgressBar()
    report = trio.run(run, graph, name, config, bar,
                      clock=trio.testing.MockClock(autojump_threshold=0))
    bar.done()
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(render(report))
    return 0 if report.converged else 1


def render(r: RoutingReport) -> str:
    lines = [
        f"topology        {r.topology}: {r.nodes} nodes, {r.links} links, "
        f"mean degree {r.mean_degree}, seed {r.seed}",
        f"convergence     {r.convergence_s} s virtual, reached after {r.convergence_wall_s} s "
        "of wall time (node start-up included)" if r.converged
        else "convergence     NOT converged",
        f"optimal routes  {r.optimal_share:.2%} of {r.pairs} pairs "
        f"({r.unreachable_pairs} unreachable)",
        f"stretch         mean {r.mean_stretch:.4f}, p99 {r.p99_stretch:.4f}, "
        f"max {r.max_stretch:.4f}",
        f"loops           {r.loops_in_tables} in tables",
        f"control traffic {r.control_bytes_per_node_s:.0f} bytes/node/s (steady state)",
        f"route flaps     {r.steady_next_hop_changes} next-hop changes in steady state",
    ]
    if r.failed_links or r.crashed_nodes:
        lines += [
            f"failures        {r.failed_links} links failed, {r.crashed_nodes} nodes crashed: "
            f"detected after {r.failure_detection_s} s, "
            f"reconverged after {r.reconvergence_s} s "
            f"({r.reconvergence_ratio} x the detection time)",
            f"traffic         {r.packets_delivered}/{r.packets_sent} delivered "
            f"({r.delivery_ratio:.4%}); lost in failed links {r.lost_on_failed_links}, "
            f"lost elsewhere {r.lost_elsewhere}, dropped {r.dropped_elsewhere}, "
            f"looping packets {r.looping_packets}",
            f"after failure   {r.optimal_share_after:.2%} of pairs on an optimal route",
        ]
    lines += [f"cost            {r.wall_s} s wall for {r.virtual_s} s virtual, "
              f"peak RSS {r.peak_rss_mb} MB"]
    lines += [f"note            {note}" for note in r.notes]
    return "\n".join(lines)
