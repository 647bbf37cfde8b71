"""``overlay bench hybrid``: the hybrid design in the simulator, figures beside the issue's targets.

The scenarios (relayed latency against the direct path, failover under
reliable conversations, one supernode's capacity) live in
:mod:`overlay.sim.hybrid`; this module parses the command line, runs them in
virtual time and prints what they measured.  Every latency figure is a ratio
to a baseline from the same run (the direct path on the same latency map),
and every failover time is counted from the moment the failure became
detectable, so the figures do not depend on how fast this machine is.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio
import trio.testing

from overlay.cli.common import non_negative_int, positive_float, positive_int, run_interruptibly
from overlay.cli.progress import ProgressBar
from overlay.sim import hybrid as sim

SCENARIOS = ("relay", "failover", "capacity")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    """Add ``hybrid`` to the ``overlay bench`` subcommands."""
    defaults = sim.HybridConfig()
    parser = subparsers.add_parser(
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
    parser.add_argument("--scenarios", type=_scenarios, default=frozenset(SCENARIOS),
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
    parser.set_defaults(run=run, verbose_default=-2)


def _scenarios(text: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = chosen - set(SCENARIOS)
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(
            f"choose among {', '.join(SCENARIOS)}; got {text!r}")
    return chosen


def config_from(args: argparse.Namespace) -> sim.HybridConfig:
    return sim.HybridConfig(
        supernodes=args.supernodes, clients=args.clients,
        capacity_clients=args.capacity_clients, seed=args.seed, width=args.width / 1000,
        clusters=args.clusters,
        candidates=args.candidates, hello_interval=args.hello_interval,
        dead_after=args.dead_after, settle=args.settle, rate=args.rate)


def run(args: argparse.Namespace) -> int:
    """Run the chosen scenarios under a virtual clock and print the report."""
    config = config_from(args)
    progress = ProgressBar()
    try:
        report = run_interruptibly(_run, config, args.scenarios, progress,
                                  clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        progress.done()
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(render(report))
    return 0


async def _run(config: sim.HybridConfig, scenarios: frozenset[str],
               progress: sim.Progress) -> sim.HybridReport:
    return await sim.run(config, progress, scenarios=scenarios)


def render(r: sim.HybridReport) -> str:
    """The report as text: one block per scenario, then the targets."""
    lines = [f"{r.supernodes} supernodes, {r.clients} clients, seed {r.seed}; "
             f"{r.virtual_s:g} s virtual in {r.wall_s:g} s wall, peak RSS {r.peak_rss_mb:g} MB"]
    if r.relay is None and r.failover is None:
        lines = [f"seed {r.seed}; {r.virtual_s:g} s virtual in {r.wall_s:g} s wall, peak RSS "
                 f"{r.peak_rss_mb:g} MB"]
    if r.relay is not None:
        a = r.relay
        lines += [
            "",
            f"relayed latency ({a.answered}/{a.pairs} pairs answered; one way = echo RTT / 2)",
            f"  relayed/direct   median {_num(a.ratio_p50)}, p90 {_num(a.ratio_p90)}",
            f"  relayed          median {_num(a.relayed_p50_ms)} ms, p90 "
            f"{_num(a.relayed_p90_ms)} ms",
            f"  direct (map)     median {_num(a.direct_p50_ms)} ms, p90 "
            f"{_num(a.direct_p90_ms)} ms",
            f"  homes            {a.at_nearest_share:.1%} of clients at their nearest "
            f"supernode; extra access latency median {_num(a.home_extra_p50_ms)} ms, p90 "
            f"{_num(a.home_extra_p90_ms)} ms",
            f"  mesh routes      stretch median {_num(a.mesh_stretch_p50)}, p90 "
            f"{_num(a.mesh_stretch_p90)} (route latency / direct supernode link)",
            f"  geometry         median ratio {_num(a.nearest_relay_ratio_p50)} via the "
            f"nearest supernodes joined directly, {_num(a.ideal_ratio_p50)} via the best two",
        ]
    if r.failover is not None:
        f = r.failover
        lines += [
            "",
            f"failover (supernode {f.victim} powered off; detectable after "
            f"{f.detection_delay_s:g} s)",
            f"  affected clients {f.affected} ({f.without_standby} without a standby up); "
            f"{f.standby_lost} more lost their standby ({f.standby_replaced} had a new one up "
            f"within {_num(f.standby_replaced_max_s)} s)",
            f"  reattached       {f.reattached}/{f.affected}, median {_num(f.reattach_p50_s)} s, "
            f"worst {_num(f.reattach_max_s)} s after detectable",
            f"  reachable        {f.reachable}/{f.affected}, median {_num(f.reachable_p50_s)} s, "
            f"worst {_num(f.reachable_max_s)} s (first echo back from the peer)",
            f"  within 3 s       {f.within_3s}/{f.affected}",
            f"  conversations    {f.conversations}: {f.messages_delivered}/{f.messages_sent} "
            f"messages delivered; lost {f.lost}, duplicated {f.duplicated}, reordered "
            f"{f.reordered}; {f.retransmissions} retransmissions",
            f"  longest pause    median {_num(f.pause_p50_s)} s, worst {_num(f.pause_max_s)} s "
            "(affected conversations)",
            f"  message delay    median {_num(f.delay_p50_s)} s, p99 {_num(f.delay_p99_s)} s, "
            f"worst {_num(f.delay_max_s)} s; all acknowledged {_num(f.drained_s)} s after "
            f"sending stopped ({f.unacknowledged} directions never)",
        ]
        lines += [f"  problem          {line}" for line in f.problems]
    if r.capacity is not None:
        c = r.capacity
        lines += [
            "",
            f"capacity (one supernode, {c.clients} clients)",
            f"  attached         {c.attached}; echoes {c.echo_replies}/{c.echo_pairs} answered "
            f"(median RTT {_num(c.echo_rtt_p50_ms)} ms)",
            f"  memory           {c.supernode_bytes_per_client / 1024:.1f} KiB per attached "
            f"client on the supernode; {c.process_bytes_per_client / 1024:.1f} KiB per client "
            "for the whole process",
        ]
    lines += ["", "targets"]
    for t in r.targets:
        verdict = "-" if t.met is None else "met" if t.met else "MISSED"
        lines.append(f"  {t.figure:<56} {_num(t.measured):>8} (target {t.target}): {verdict}")
    lines += [f"note: {note}" for note in r.notes]
    return "\n".join(lines)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value + 0.0:g}"  # + 0.0 turns a rounded -0.0 into 0 ("-0 s" reads as a bug)
    return str(value)
