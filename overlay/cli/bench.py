"""``overlay bench ...``: benchmarks that measure, in one run, a figure and its baseline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from overlay.bench import chat as chat_bench
from overlay.bench import hybrid as hybrid_bench
from overlay.cli.common import positive_float, positive_int, run_interruptibly
from overlay.cli.progress import ProgressBar
from overlay.errors import ConfigError
from overlay.sim import topology
from overlay.sim.routing_bench import BenchConfig, RoutingReport, run

if TYPE_CHECKING:
    from overlay.bench.directory import DirectoryReport

TARGET_CLIENTS = 100
"""The directory bench's targets are stated for this many clients; other runs get no verdict."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    bench = subparsers.add_parser(
        "bench", parents=[common],
        help="run a benchmark (routing, transport, directory, chat, hybrid)",
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
            "relayed cases) carrying the same messages in the same run, as ratios; then "
            "the link handshake time (TCP connect to established, p50/p95) beside a bare "
            "TCP connect.  By default everything runs in this process, on one core; with "
            "--processes every node (the relays are `overlay node` processes) and every "
            "forwarder runs in its own process.  Progress on stderr."
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
    transport.add_argument("--handshakes", type=positive_int, default=100, metavar="N",
                           help="link handshakes to time (default 100)")
    transport.add_argument("--processes", action="store_true",
                           help="every node and forwarder in its own OS process")
    transport.add_argument("--plot", type=Path, default=None, metavar="DIR",
                           help="also draw DIR/transport.png: goodput and round trip per "
                                "relay count beside the baseline (needs matplotlib)")
    transport.add_argument("--time-limit", type=positive_float, default=600.0,
                           metavar="SECONDS",
                           help="give up (and stop every process) after this long "
                                "(default 600)")
    transport.add_argument("--json", action="store_true", help="print the figures as JSON")
    transport.set_defaults(run=run_transport, verbose_default=-2)

    directory = kinds.add_parser(
        "directory", parents=[common],
        help="directory server logins/lookups/presence on 127.0.0.1 against the bare hash rate",
        description=(
            "Start `overlay server` with a fresh database, register --clients users (each a "
            "contact of a few others), then measure logins/s, lookups/s and presence "
            "updates/s from concurrent clients on 127.0.0.1 in closed loops (or at a fixed "
            "--rate), with p50/p99 latency, errors, and the cores the server, the clients "
            "and everything else kept busy.  Logins are set beside the bare Argon2id "
            "verification rate on one thread per core, measured in the same run while the "
            "server is idle, as a ratio.  Progress on stderr."
        ),
    )
    directory.add_argument("--clients", type=positive_int, default=100, metavar="N",
                           help="concurrent clients, one user and connection each (default 100)")
    directory.add_argument("--duration", type=positive_float, default=5.0, metavar="SECONDS",
                           help="length of each measured phase (default 5)")
    directory.add_argument("--client-procs", type=positive_int, default=None, metavar="N",
                           help="processes the clients are spread over (default: one per "
                                "core, at most one per client)")
    directory.add_argument("--contacts", type=positive_int, default=2, metavar="K",
                           help="each user asks the next K users on a ring, so has 2K "
                                "contacts (default 2)")
    directory.add_argument("--hash-seconds", type=positive_float, default=3.0, metavar="S",
                           help="how long to measure the bare password-hash rate (default 3)")
    directory.add_argument("--max-ops", type=positive_int, default=1_000_000, metavar="N",
                           help="cap on operations per phase, all clients together "
                                "(default 1000000)")
    directory.add_argument("--rate", type=positive_float, default=None, metavar="OPS",
                           help="offer lookups and presence updates at OPS/s in all (each "
                                "client on a fixed schedule, latency counted from it) instead "
                                "of closed loops; logins stay closed loops")
    directory.add_argument("--json", action="store_true", help="print the figures as JSON")
    directory.set_defaults(run=run_directory, verbose_default=-2)

    storm = kinds.add_parser(
        "storm", parents=[common],
        help="N clients log in again at once after a directory server restart",
        description=(
            "Register N accounts on a real `overlay server` on 127.0.0.1, kill it (SIGKILL) "
            "and start it again on the same port and database while all N clients try to "
            "log in with their passwords, backing off with jitter and waiting out 429s as "
            "roles do.  Reports the seconds until 99% and 100% are back, the 429s sent, "
            "the server's peak login queue and the slowest answer to a health request "
            "(the supernode list, every 0.2 s) during the storm."
        ),
    )
    storm.add_argument("--clients", type=positive_int, default=1000, metavar="N",
                       help="clients in the storm (default %(default)s)")
    storm.add_argument("--timeout", type=positive_float, default=300.0, metavar="SECONDS",
                       help="bound on each phase; clients not back by then gave up "
                            "(default %(default)g)")
    storm.add_argument("--max-login-queue", type=positive_int, default=None, metavar="N",
                       help="the server's bound on queued password hashes (default: its own)")
    storm.add_argument("--db", default=None, metavar="PATH|URL",
                       help="the server's database (default: SQLite in a temporary directory)")
    storm.add_argument("--json", action="store_true", help="print the figures as JSON")
    storm.set_defaults(run=run_storm, verbose_default=-2)

    chat_bench.add_parser(kinds, common)
    hybrid_bench.add_parser(kinds, common)


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
    from overlay.bench import plots, transport_inprocess, transport_processes
    from overlay.bench import transport as bench_transport

    if args.plot is not None:
        plots.check_available()  # before the run, not after it
    run_bench = transport_processes.run if args.processes else transport_inprocess.run
    bar = ProgressBar()
    try:
        config = bench_transport.TransportConfig(
            hops=tuple(args.hops), size=args.size, count=args.count, pings=args.pings,
            handshakes=args.handshakes, time_limit=args.time_limit)
        report = run_interruptibly(run_bench, config, bar)
    finally:
        bar.done()
    if args.plot is not None:
        for path in plots.transport(report.to_json(), args.plot):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
        return 0
    where = ("every node and forwarder in its own process" if args.processes
             else "all in this process")
    print(f"{args.count} messages of {args.size} bytes; {args.pings} round trips; {where}")
    print(f"{'relays':>6}  {'':8} {'msgs/s':>9} {'MB/s':>8} {'rtt p50':>9} {'rtt p99':>9} "
          f"{'p50/hop':>9}")
    for r in report.hops:
        for label, f, per_hop in (("overlay", r.overlay, r.rtt_p50_per_hop_us),
                                  ("plain", r.baseline, r.baseline_rtt_p50_per_hop_us)):
            print(f"{r.relays if label == 'overlay' else '':>6}  {label:8} "
                  f"{f.goodput_msgs_s:>9.0f} {f.goodput_mb_s:>8.2f} "
                  f"{f.rtt_p50_ms:>7.3f}ms {f.rtt_p99_ms:>7.3f}ms {per_hop:>7.0f}us")
        extra = ""
        if r.rtt_p50_added_per_relay_us is not None:
            extra = f"; {r.rtt_p50_added_per_relay_us:.0f} us more round trip per relay"
        print(f"{'':6}  goodput {r.goodput_ratio:.1%} of plain trio{extra}")
        if r.relay_cpu_us_per_msg is not None and r.baseline_relay_cpu_us_per_msg is not None:
            print(f"{'':6}  CPU per message in each relay: overlay node "
                  f"{r.relay_cpu_us_per_msg:.0f} us, plain forwarder "
                  f"{r.baseline_relay_cpu_us_per_msg:.0f} us")
    h = report.handshake
    print(f"handshake ({h.count}, TCP connect to established): p50 {h.p50_ms:.3f} ms, "
          f"p95 {h.p95_ms:.3f} ms; bare TCP connect p50 {h.tcp_connect_p50_ms:.3f} ms, "
          f"p95 {h.tcp_connect_p95_ms:.3f} ms")
    return 0


def run_storm(args: argparse.Namespace) -> int:
    from overlay.bench import storm as storm_bench

    config = storm_bench.StormConfig(clients=args.clients, timeout=args.timeout,
                                     max_login_queue=args.max_login_queue, db=args.db)
    report = run_interruptibly(storm_bench.run, config)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        for name, value in report.to_json().items():
            print(f"{name:18} {value}")
    return 0 if report.gave_up == 0 else 1


def run_directory(args: argparse.Namespace) -> int:
    from overlay.bench import directory as bench_directory

    config = bench_directory.BenchConfig(
        clients=args.clients, duration=args.duration,
        client_procs=args.client_procs or bench_directory.default_client_procs(),
        contacts_each=args.contacts, hash_seconds=args.hash_seconds, max_ops=args.max_ops,
        rate=args.rate)
    bar = ProgressBar()
    try:
        report = run_interruptibly(bench_directory.run, config, bar)
    finally:
        bar.done()
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(render_directory(report))
    return 0


def render_directory(r: DirectoryReport) -> str:
    """The report as a table: figures first, then who used the CPU, errors, the targets."""
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}ms"

    h = r.hash
    phases = (r.logins, r.lookups, r.presence)
    lines = [
        f"{r.clients} clients in {r.client_procs} process(es), {r.contacts_per_user} contacts "
        f"each, {r.duration_s:g} s per phase; server on {r.server}; {r.cores} cores",
        f"setup: {r.setup.users} users registered and logged in, {r.setup.contact_pairs} "
        f"contact pairs, in {r.setup.seconds:.1f} s",
        "",
        f"{'phase':<10} {'load':>10} {'ops':>8} {'ops/s':>9} {'p50':>10} {'p99':>10} "
        f"{'errors':>7}",
    ]
    lines += [f"{p.name:<10} {'closed' if p.offered_s is None else f'{p.offered_s:g}/s':>10} "
              f"{p.ops:>8} {p.ops_s:>9.1f} {ms(p.p50_ms):>10} {ms(p.p99_ms):>10} "
              f"{p.errors:>7}" for p in phases]
    lines += [
        "",
        f"password hash (argon2id, {h.threads} threads, server idle): {h.hashes_s:.1f}/s, "
        f"the faster of: before logins {h.before.hashes_s:.1f}/s "
        f"({h.before.ms_per_hash:.1f} ms each), after {h.after.hashes_s:.1f}/s "
        f"({h.after.ms_per_hash:.1f} ms each)",
        f"logins/s = {r.login_hash_ratio:.1%} of the bare hash rate",
    ]
    if r.presence.notices:
        lines.append(f"presence notices delivered to contacts: {r.presence.notices_s:.0f}/s")
    windows = [(p.name, p.cpu) for p in phases] + [("hash", h.before.cpu),
                                                    ("hash again", h.after.cpu)]
    if all(cpu is not None for _, cpu in windows):
        lines.append("cores busy     server clients  bench  other   idle   server/op clients/op")
        per_op = {p.name: (p.server_us_per_op, p.clients_us_per_op) for p in phases}
        for name, cpu in windows:
            assert cpu is not None
            server_op, clients_op = per_op.get(name, (None, None))
            cost = "" if server_op is None or clients_op is None \
                else f" {server_op:>9.0f}us {clients_op:>8.0f}us"
            lines.append(f"  {name:<12} {cpu.server:>6.2f} {cpu.clients:>7.2f} "
                         f"{cpu.bench:>6.2f} {cpu.other:>6.2f} {cpu.idle:>6.2f}{cost}")
    for p in phases:
        if p.errors:
            kinds = ", ".join(f"{k}: {n}" for k, n in p.errors_by_kind.items())
            lines.append(f"errors in {p.name}: {kinds}; first: {p.first_error}")
    comparable = r.clients == TARGET_CLIENTS
    lines.append(f"targets (stated for {TARGET_CLIENTS} clients on 2 cores"
                 f"{'' if comparable else f'; this run had {r.clients}, so no verdict'}):")
    for t in r.targets:
        sign = ">=" if t.kind == "min" else "<"
        shown = "-" if t.measured is None else f"{t.measured:g}"
        verdict = ("met" if t.met else "MISSED") if comparable else "-"
        lines.append(f"  {t.figure:<18} {shown:>10} (target {sign} {t.limit:g}): {verdict}")
    lines += [f"note: {note}" for note in r.notes]
    return "\n".join(lines)


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
    bar = ProgressBar()
    report = run_interruptibly(run, graph, name, config, bar,
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
