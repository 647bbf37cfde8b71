"""``overlay bench ...``: each bench run from its arguments, and its report printed.

The bench modules are imported inside these functions, only when that bench
runs (see :mod:`overlay.cli.bench`).  Every run goes through
:func:`~overlay.cli.common.run_interruptibly`: Ctrl-C cancels it, its child
processes are stopped, and ``overlay`` exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from overlay.cli.common import run_interruptibly
from overlay.cli.progress import ProgressBar

if TYPE_CHECKING:
    from overlay.bench.progress import Progress


class _Report(Protocol):
    def to_json(self) -> dict[str, Any]: ...


ConfigT = TypeVar("ConfigT")
ReportT = TypeVar("ReportT", bound=_Report)


def _run(run: Callable[[ConfigT, Progress], Awaitable[ReportT]], config: ConfigT, *,
         virtual_time: bool = False) -> ReportT:
    """``run(config, progress)`` with a progress bar on stderr, interruptible by Ctrl-C;
    under trio's autojumping MockClock for the simulated benches."""
    clock = None
    if virtual_time:
        import trio.testing

        clock = trio.testing.MockClock(autojump_threshold=0)
    bar = ProgressBar(virtual_time=virtual_time)
    try:
        return run_interruptibly(run, config, bar, clock=clock)
    finally:
        bar.done()


def _show(report: ReportT, args: argparse.Namespace, render: Callable[[ReportT], str]) -> None:
    """The report on stdout: its JSON with --json, else its table."""
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(render(report))


def run_routing(args: argparse.Namespace) -> int:
    from overlay.bench import plots, routing
    from overlay.cli.bench_render import render_routing

    if args.plot is not None:
        plots.check_available()  # before the run, not after it
    config = routing.BenchConfig(
        topology=args.topology, nodes=args.nodes, latency_attr=args.latency_attr,
        latency_unit=args.latency_unit, seed=args.seed, fail_links=args.fail_links,
        crash_nodes=args.crash_nodes, jitter=args.jitter, hello_interval=args.hello_interval,
        update_interval=args.update_interval, pairs=args.pairs,
        check_destinations=args.check_destinations, measure=args.steady,
        timeline=args.plot is not None)
    report = _run(routing.run, config, virtual_time=True)
    if args.plot is not None:
        graph, _ = routing.load_graph(config)  # the same graph again: generated from the seed
        for path in plots.routing(report.to_json(), graph, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    _show(report, args, render_routing)
    return 0 if report.converged else 1


def run_transport(args: argparse.Namespace) -> int:
    from overlay.bench import plots, transport
    from overlay.cli.bench_render import render_transport

    if args.plot is not None:
        plots.check_available()  # before the run, not after it
    config = transport.TransportConfig(
        hops=tuple(args.hops), size=args.size, count=args.count, pings=args.pings,
        handshakes=args.handshakes, time_limit=args.time_limit, processes=args.processes)
    report = _run(transport.run, config)
    if args.plot is not None:
        for path in plots.transport(report.to_json(), args.plot):
            print(f"wrote {path}", file=sys.stderr)
    _show(report, args, render_transport)
    return 0


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""``overlay.directory.server.store.POSTGRES_SCHEMES``, without importing the store."""


def _usage_error(args: argparse.Namespace, message: str) -> int:
    """One line and status 2, as argparse would exit, without its usage block."""
    print(f"overlay bench {args.bench}: {message}", file=sys.stderr)
    return 2


def run_directory(args: argparse.Namespace) -> int:
    postgres = args.db is not None and args.db.startswith(POSTGRES_SCHEMES)
    if args.compare and not postgres:
        return _usage_error(args, "--compare needs --db postgresql://... (the PostgreSQL "
                                  "runs are compared with SQLite x1)")
    if args.servers > 1 and not postgres:
        return _usage_error(args, f"--servers {args.servers} needs --db postgresql://...: "
                                  "a SQLite file serves one process")

    from overlay.bench import directory
    from overlay.cli.bench_render import render_directory, render_directory_compare

    config = directory.BenchConfig(
        clients=args.clients, duration=args.duration,
        client_procs=args.client_procs or directory.default_client_procs(),
        contacts_each=args.contacts, hash_seconds=args.hash_seconds, max_ops=args.max_ops,
        rate=args.rate, db=args.db, servers=args.servers)
    if args.compare:
        from overlay.bench import directory_compare

        _show(_run(directory_compare.run, directory_compare.CompareConfig(config)), args,
              render_directory_compare)
    else:
        _show(_run(directory.run, config), args, render_directory)
    return 0


def run_storm(args: argparse.Namespace) -> int:
    from overlay.bench import storm
    from overlay.bench.progress import no_progress
    from overlay.cli.bench_render import render_storm

    config = storm.StormConfig(clients=args.clients, timeout=args.timeout,
                               max_login_queue=args.max_login_queue, db=args.db)
    report = run_interruptibly(storm.run, config, no_progress)  # no bar: as it always was
    if args.json:
        print(json.dumps(report.to_json()))  # one line, as it always was
    else:
        print(render_storm(report))
    return 0 if report.gave_up == 0 else 1


def run_chat(args: argparse.Namespace) -> int:
    from overlay.bench import chat
    from overlay.cli.bench_render import render_chat

    _show(_run(chat.run, chat.ChatConfig(messages=args.messages)), args, render_chat)
    return 0


def run_hybrid(args: argparse.Namespace) -> int:
    """Run the chosen scenarios under a virtual clock and print the report."""
    from overlay.bench import hybrid
    from overlay.cli.bench_render import render_hybrid

    world = hybrid.HybridConfig(
        supernodes=args.supernodes, clients=args.clients,
        capacity_clients=args.capacity_clients, seed=args.seed, width=args.width / 1000,
        clusters=args.clusters,
        candidates=args.candidates, hello_interval=args.hello_interval,
        dead_after=args.dead_after, settle=args.settle, rate=args.rate)
    config = hybrid.HybridBenchConfig(world=world, scenarios=args.scenarios)
    _show(_run(hybrid.run, config, virtual_time=True), args, render_hybrid)
    return 0


def run_nat(args: argparse.Namespace) -> int:
    """Check the numbers (one line each), then the lab (one line, status 1), then run."""
    from overlay.cli.bench import NAT_PAIRINGS
    from overlay.cli.common import positive_float, positive_int

    numbers: dict[str, float] = {}
    for option, parse in (("repeat", positive_int), ("messages", positive_int),
                          ("start_delay", positive_float),
                          ("session_timeout", positive_float), ("time_limit", positive_float)):
        try:
            numbers[option] = parse(getattr(args, option))
        except argparse.ArgumentTypeError as exc:
            return _usage_error(args, f"--{option.replace('_', '-')} {exc}")
    chosen = NAT_PAIRINGS
    if args.pairings is not None:
        chosen = tuple(p.strip() for p in args.pairings.split(",") if p.strip())
        unknown = [p for p in chosen if p not in NAT_PAIRINGS]
        if unknown or not chosen:
            return _usage_error(args, f"--pairings: choose among {', '.join(NAT_PAIRINGS)}; "
                                      f"got {args.pairings!r}")
    if numbers["session_timeout"] <= numbers["start_delay"] + 20:
        return _usage_error(args, "--session-timeout must exceed --start-delay by more "
                                  "than 20 s (the relayed window, punching, the second window)")

    from overlay.bench import nat
    from overlay.cli.bench_render import render_nat
    from overlay.lab import LabError, available

    reason = available()
    if reason is not None:
        raise LabError(f"needs the NAT lab: {reason}")
    pairings = tuple(p for p in nat.PAIRINGS if p.name in chosen)
    config = nat.NatBenchConfig(
        pairings=pairings, repeat=int(numbers["repeat"]), messages=int(numbers["messages"]),
        start_delay=numbers["start_delay"], session_timeout=numbers["session_timeout"],
        time_limit=numbers["time_limit"], prefix=args.prefix)

    def lines(phase: str, fraction: float) -> None:
        print(f"{phase} ({fraction:.0%})", file=sys.stderr, flush=True)

    report = run_interruptibly(nat.run, config, lines)
    _show(report, args, render_nat)
    return 0
