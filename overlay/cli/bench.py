"""``overlay bench ...``: benchmarks that measure, in one run, a figure and its baseline.

The command line of every bench is here and in two neighbours: this module's
parsers, :mod:`overlay.cli.bench_run` (each bench's config from the arguments,
the run under :func:`~overlay.cli.common.run_interruptibly`, the output) and
:mod:`overlay.cli.bench_render` (reports as text).  The measuring code is
:mod:`overlay.bench`; it is imported only once a bench runs, so that
``overlay bench --help`` does not load the simulator, networkx or the chat
engine.  Hence the few facts the
parsers need from those modules (the topology kinds, the hybrid defaults, the
chat bench's description) are restated here; tests/cli/test_bench.py checks
that they agree.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from overlay.cli.bench_run import (
    run_chat,
    run_directory,
    run_hybrid,
    run_nat,
    run_routing,
    run_storm,
    run_transport,
)
from overlay.cli.common import (
    non_negative_finite_float,
    non_negative_int,
    positive_float,
    positive_int,
)

TOPOLOGY_KINDS = ("line", "ring", "grid", "geometric", "random-geometric", "waxman", "ba",
                  "barabasi-albert")
"""``overlay.sim.topology.KINDS``, for the help text."""
LATENCY_UNITS = ("ms", "s", "us")
"""The keys of ``overlay.sim.topology.LATENCY_UNITS``."""
HYBRID_SCENARIOS = ("relay", "failover", "capacity")
"""``overlay.bench.hybrid.SCENARIOS``."""


@dataclass(frozen=True)
class _HybridDefaults:
    """The defaults of ``overlay.sim.world.HybridConfig`` that the hybrid options show."""

    supernodes: int = 20
    clients: int = 500
    capacity_clients: int = 1000
    seed: int = 1
    width: float = 0.1
    clusters: int = 0
    candidates: int = 32
    hello_interval: float = 1.0
    dead_after: int = 3
    settle: float = 60.0
    rate: float = 5.0


HYBRID_DEFAULTS = _HybridDefaults()

CHAT_DESCRIPTION = """\
`overlay bench chat`: how long until a chat message's receipt comes back, on 127.0.0.1.

The system of `overlay demo` in one process: a directory server, two
supernodes, and two users behind "NAT" (not listening), each attached to a
different supernode, so every message goes user -> supernode -> supernode ->
user and its sealed receipt comes back the same way.  One message at a time
(each waits for its receipt), so the figure is the latency, not a queue.

Baseline, same run, same path: an overlay echo (ping) from one user to the
other, which crosses the same links, supernodes and VIA tunnelling with no
chat layer (sealing, history on disk, receipts).  The ratio is the chat
layer's cost.  A second baseline: the same chat between two reachable users
over a direct link.
"""
"""The chat bench's module docstring, as its help shows it."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    bench = subparsers.add_parser(
        "bench", parents=[common],
        help="run a benchmark (routing, transport, directory, chat, hybrid, nat)",
        description="Benchmarks.  Each prints its figures; --json puts them on stdout.",
    )
    kinds = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    _add_routing(kinds, common)

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
            "server is idle, as a ratio.  Progress on stderr.  With --db postgresql://... "
            "the servers use a fresh schema in that database (dropped afterwards); "
            "--servers N runs N server processes on it, sharing one key, client i on "
            "server i mod N; --compare runs SQLite with one server, then PostgreSQL with "
            "1 to N (at least 2), back to back, and prints one table with ratios to SQLite."
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
    directory.add_argument("--db", default=None, metavar="PATH|URL",
                           help="a SQLite file to create (removed afterwards), or a "
                                "PostgreSQL URL: the run makes a schema of its own there and "
                                "drops it after (default: SQLite in a temporary directory)")
    directory.add_argument("--servers", type=positive_int, default=1, metavar="N",
                           help="server processes on the one database, more than 1 only on "
                                "PostgreSQL (default 1; with --compare: the most, default 2)")
    directory.add_argument("--compare", action="store_true",
                           help="run SQLite x1, then --db's PostgreSQL x1 .. x N, in one "
                                "invocation, and print one table with ratios to SQLite x1")
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

    for add in (_add_chat, _add_hybrid, _add_nat):
        add(kinds, common)


def _add_routing(kinds: argparse._SubParsersAction[argparse.ArgumentParser],
                 common: argparse.ArgumentParser) -> None:
    routing = kinds.add_parser(
        "routing", parents=[common], help="routing convergence and route quality in the simulator",
        description=(
            "Run N real nodes on an emulated network in virtual time: measure the time to "
            "converge, the share of node pairs on a lowest-latency route and the stretch "
            "(route latency / shortest latency by Dijkstra on the true link latencies), "
            "routing loops, control traffic, and, with --fail-links, reconvergence and "
            "delivery while links fail under traffic.  Reproducible from --seed."
        ),
        epilog=("topologies: " + ", ".join(TOPOLOGY_KINDS) + ", or a GraphML/GML/node-link "
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
    routing.add_argument("--latency-unit", choices=sorted(LATENCY_UNITS), default="s",
                         help="unit of --latency-attr (default s)")
    routing.add_argument("--jitter", type=float, default=0.0, metavar="SECONDS",
                         help="random extra delay per message, up to this (RTT noise)")
    routing.add_argument("--hello-interval", type=positive_float, default=1.0, metavar="S",
                         help="keepalive interval (default 1)")
    routing.add_argument("--update-interval", type=positive_float, default=16.0, metavar="S",
                         help="periodic route update interval (default 16)")
    routing.add_argument("--steady", type=non_negative_finite_float, default=None,
                         metavar="S",
                         help="steady-state window in virtual seconds, where control bytes "
                              "and route flaps are counted (default: the longest full-table "
                              "period any node announces, 250 s at 1,000 nodes, so the "
                              "periodic refresh counts fairly); 0 skips the steady state")
    routing.add_argument("--check-destinations", type=non_negative_int, default=None,
                         metavar="K",
                         help="check every node's route to K destinations (a seeded sample) "
                              "against the shortest paths; 0 checks all (default: all up to "
                              "2,000 nodes, 250 beyond: each destination costs a Dijkstra "
                              "and a walk of every node's next hops)")
    routing.add_argument("--pairs", action="store_true",
                         help="with --json, every pair's route (source, destination, route "
                              "and shortest latency, stretch, hops); beyond 100,000 pairs "
                              "(about 317 nodes) a seeded sample of that many")
    routing.add_argument("--plot", type=Path, default=None, metavar="DIR",
                         help="also draw DIR/routing-topology.png, routing-stretch.png and, "
                              "with --fail-links, routing-reconvergence.png (needs matplotlib)")
    routing.add_argument("--json", action="store_true", help="print the figures as JSON")
    routing.set_defaults(run=run_routing, verbose_default=-2)


def _add_chat(kinds: argparse._SubParsersAction[argparse.ArgumentParser],
              common: argparse.ArgumentParser) -> None:
    parser = kinds.add_parser(
        "chat", parents=[common],
        help="delivered-receipt time of chat messages through two supernodes",
        description=CHAT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=positive_int, default=1000, metavar="N",
                        help="messages to time (default 1000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run_chat, verbose_default=-2)


def _add_hybrid(kinds: argparse._SubParsersAction[argparse.ArgumentParser],
                common: argparse.ArgumentParser) -> None:
    defaults = HYBRID_DEFAULTS
    parser = kinds.add_parser(
        "hybrid", parents=[common],
        help="supernodes and NAT-bound clients in the simulator: relay latency, failover, "
             "capacity",
        description=(
            "Run a directory, supernodes and edge clients (which cannot be dialled: NAT) on "
            "an emulated network whose link latencies are distances on a seeded random map, "
            "in virtual time.  Reports the relayed client-to-client latency as a ratio to "
            "the direct path on the map, the time failed-over clients take to be attached "
            "and reachable again after their supernode is powered off mid-conversation "
            "(and any message lost on reliable channels), and memory per client attached "
            "to one supernode, each beside the issue's target.  Reproducible from --seed "
            "(up to trio's shuffling of tasks that wake at the same instant).  Progress "
            "on stderr."),
    )
    parser.add_argument("--supernodes", type=positive_int, default=defaults.supernodes,
                        metavar="N", help=f"supernodes (default {defaults.supernodes})")
    parser.add_argument("--clients", type=positive_int, default=defaults.clients, metavar="N",
                        help=f"edge clients for relay and failover (default {defaults.clients})")
    parser.add_argument("--capacity-clients", type=positive_int,
                        default=defaults.capacity_clients, metavar="N",
                        help="clients attached to the single supernode of the capacity "
                             f"scenario (default {defaults.capacity_clients})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help=f"random seed (default {defaults.seed})")
    parser.add_argument("--scenarios", type=_scenarios, default=frozenset(HYBRID_SCENARIOS),
                        metavar="NAME,...",
                        help="which to run, of relay,failover,capacity (default all)")
    parser.add_argument("--width", type=positive_float, default=defaults.width * 1000,
                        metavar="MS", help="side of the square latency map in ms "
                                           f"(default {defaults.width * 1000:g})")
    parser.add_argument("--clusters", type=non_negative_int, default=defaults.clusters,
                        metavar="K",
                        help="place hosts around K random centres (cities) instead of "
                             "uniformly (default 0: uniform)")
    parser.add_argument("--candidates", type=positive_int, default=defaults.candidates,
                        metavar="N", help="supernodes a client probes to choose its home "
                                          f"(default {defaults.candidates}, the role's)")
    parser.add_argument("--hello-interval", type=positive_float,
                        default=defaults.hello_interval, metavar="S",
                        help=f"link keepalive interval (default {defaults.hello_interval:g})")
    parser.add_argument("--dead-after", type=positive_int, default=defaults.dead_after,
                        metavar="N", help="missed keepalives before a link is dead "
                                          f"(default {defaults.dead_after})")
    parser.add_argument("--settle", type=positive_float, default=defaults.settle, metavar="S",
                        help="virtual seconds between the last attachment and the "
                             f"measurements (default {defaults.settle:g})")
    parser.add_argument("--rate", type=positive_float, default=defaults.rate, metavar="MSGS",
                        help="messages per second each way in each failover conversation "
                             f"(default {defaults.rate:g})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(run=run_hybrid, verbose_default=-2)


NAT_DESCRIPTION = """\
`overlay bench nat`: hole punching over every NAT pairing of the real-NAT lab, repeated.

Needs root and network namespaces (docs/nat-lab.md); builds its own lab
(namespaces PREFIX-*), removes it afterwards.  A directory server and three
supernodes on the public side, one client behind each of two NAT routers.
Pairings: easy-easy, easy-hard, hard-hard (easy: port-preserving MASQUERADE;
hard: MASQUERADE --random), each with the routers' firewall (unsolicited
inbound dropped) and without it (-nofw).  Each session: two fresh users and
processes; a conversation starts relayed, with punching held off for
--start-delay seconds while --messages stop-and-wait messages measure the
relayed path; then punching runs while messages flow, and --messages more
measure the path it ended on.  The supernodes' counters are read around both
windows.

Per pairing: sessions ending direct, time from the first message to the
direct link (median, p90; the hold-off not counted), dials per success, the
round trip after the upgrade as a ratio to the same session's relayed one,
supernode bytes sent and packets forwarded per window; overall, the share
direct where a direct path is expected, and the share of hard-hard sessions
that delivered everything by relay.  One progress line per session on stderr.
Ctrl-C (or SIGTERM) stops the run after the session under way (at most
--session-timeout), removes the lab and exits 130.
"""
"""The nat bench's help text (its module docstring is :mod:`overlay.bench.nat`)."""


def _add_nat(kinds: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    parser = kinds.add_parser(
        "nat", parents=[common],
        help="hole punching over every NAT pairing in the real-NAT lab (needs root)",
        description=NAT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: sudo bin/overlay bench nat --repeat 5\n"
               "         sudo bin/overlay bench nat --pairings easy-easy,hard-hard "
               "--repeat 1 --json")
    # Numbers are checked by run_nat, so that a bad one is one line (and status 2).
    parser.add_argument("--repeat", default="5", metavar="K",
                        help="sessions per pairing (default 5)")
    parser.add_argument("--pairings", default=None, metavar="NAME,...",
                        help="which pairings, of " + ", ".join(NAT_PAIRINGS)
                             + " (default all)")
    parser.add_argument("--messages", default="100", metavar="N",
                        help="stop-and-wait messages in each measured window (default 100)")
    parser.add_argument("--start-delay", default="5", metavar="SECONDS",
                        help="punching held off this long, for the relayed window "
                             "(default 5)")
    parser.add_argument("--session-timeout", default="90", metavar="SECONDS",
                        help="bound on one session (default 90)")
    parser.add_argument("--time-limit", default="1800", metavar="SECONDS",
                        help="no session starts after this long (default 1800)")
    parser.add_argument("--prefix", default="ovb", metavar="P",
                        help="the lab's name: its namespaces are P-HOST (default ovb)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(run=run_nat, verbose_default=-2)


NAT_PAIRINGS = ("easy-easy", "easy-hard", "hard-hard", "easy-easy-nofw", "easy-hard-nofw",
                "hard-hard-nofw")
"""The names of ``overlay.bench.nat.PAIRINGS``."""


def _scenarios(text: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = chosen - set(HYBRID_SCENARIOS)
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(
            f"choose among {', '.join(HYBRID_SCENARIOS)}; got {text!r}")
    return chosen


def _hops_arg(text: str) -> list[int]:
    try:
        hops = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected relay counts like 0,1,3, got {text!r}") from None
    if not hops or any(h < 0 or h > 8 for h in hops):
        raise argparse.ArgumentTypeError("relay counts must be between 0 and 8")
    return hops
