"""``overlay ping``, ``overlay traceroute`` and ``overlay route``: through a running node.

The CLI asks the local node (over its control socket) to send each probe, so
the probes travel the overlay's routes exactly as the node's own packets do;
``route`` asks where a packet would go, sending nothing (like ``ip route get``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial
from pathlib import Path
from typing import Any

import trio

from overlay.cli.common import add_state_argument, positive_float, positive_int, stop_signals
from overlay.net.control import control_request
from overlay.proto.messages import DEFAULT_TTL, MAX_TTL
from overlay.state import control_socket_path, default_state_dir

PROBE_PATIENCE = 2.0


def ttl_arg(text: str) -> int:
    value = positive_int(text)
    if value > MAX_TTL:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TTL}, got {text}")
    return value


def _common(parser: argparse.ArgumentParser, *, what: str = "per probe") -> None:
    parser.add_argument("node_id", metavar="DESTINATION",
                        help="a full node id, a unique prefix of one (>= 4 hex digits), or, "
                             "on an edge client, a contact's username")
    add_state_argument(parser)
    parser.add_argument("--json", action="store_true",
                        help=f"print one JSON object {what} instead of text")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    ping = subparsers.add_parser(
        "ping", parents=[common], help="send overlay echo requests to a node",
        description=(
            "Send overlay ECHO_REQUEST packets from the local node to NODE_ID along the "
            "overlay's routes and print each round-trip time, then a summary like ping's. "
            "Exit status 0 if any reply came back, 1 otherwise."
        ),
    )
    _common(ping)
    ping.add_argument("-c", "--count", type=positive_int, default=4, metavar="N",
                      help="number of probes (default 4)")
    ping.add_argument("-i", "--interval", type=positive_float, default=1.0, metavar="SECONDS",
                      help="time between probes (default 1)")
    ping.add_argument("--ttl", type=ttl_arg, default=DEFAULT_TTL,
                      help=f"TTL of each probe (default {DEFAULT_TTL})")
    ping.set_defaults(run=run_ping)

    trace = subparsers.add_parser(
        "traceroute", parents=[common], help="show the overlay hops to a node",
        description=(
            "Send overlay echo probes with TTL 1, 2, 3, ... to NODE_ID; each hop where a "
            "probe's TTL runs out reports back, so each line shows one hop's node id, "
            "address and round-trip time, in order, until the destination answers."
        ),
    )
    _common(trace)
    trace.add_argument("-m", "--max-hops", type=ttl_arg, default=DEFAULT_TTL, metavar="N",
                       help=f"give up after N hops (default {DEFAULT_TTL})")
    trace.set_defaults(run=run_traceroute)

    route = subparsers.add_parser(
        "route", parents=[common], help="show how this node would send to a destination",
        description=(
            "Ask the local node where a packet to DESTINATION would go now, like "
            "`ip route get`: the next hop and its address, the route's metric, or that the "
            "destination is this node, behind its home supernode (edge clients, from "
            "presence) or unreachable.  Nothing is sent.  Exit status 0 if the node has a "
            "way there, 1 if not."
        ),
    )
    _common(route, what="")
    route.set_defaults(run=run_route)


async def _probe(path: Path, dst: str, ttl: int) -> dict[str, Any]:
    result: dict[str, Any] = await control_request(path, "echo", dst=dst, ttl=ttl,
                                                   patience=PROBE_PATIENCE)
    return result


def _short(node_hex: str | None) -> str:
    return node_hex[:8] if node_hex else "?"


def run_ping(args: argparse.Namespace) -> int:
    return trio.run(_ping, args)


async def _ping(args: argparse.Namespace) -> int:
    path = control_socket_path(args.state or default_state_dir())
    rtts: list[float] = []
    sent = 0
    with stop_signals() as signals, trio.CancelScope() as scope:
        async def stop_on_signal() -> None:
            async for _ in signals:
                scope.cancel()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal)
            for seq in range(1, args.count + 1):
                started = trio.current_time()
                result = await _probe(path, args.node_id, args.ttl)
                sent += 1
                if result["kind"] == "reply":
                    rtts.append(result["rtt_ms"])
                _print_ping(args, seq, result)
                if seq < args.count:
                    await trio.sleep_until(started + args.interval)
            nursery.cancel_scope.cancel()
    if not args.json and sent:
        loss = 100 * (sent - len(rtts)) / sent
        print(f"--- {args.node_id} overlay ping statistics ---")
        print(f"{sent} probe{'s' * (sent != 1)} sent, {len(rtts)} "
              f"repl{'ies' if len(rtts) != 1 else 'y'}, {loss:.0f}% loss")
        if rtts:
            mdev = statistics.pstdev(rtts)
            print(f"rtt min/avg/max/mdev = {min(rtts):.3f}/{statistics.fmean(rtts):.3f}/"
                  f"{max(rtts):.3f}/{mdev:.3f} ms")
    return 0 if rtts else 1


def _print_ping(args: argparse.Namespace, seq: int, result: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps({"seq": seq, **result}), flush=True)
        return
    who = f"{_short(result['responder'])} ({result['address'] or '?'})"
    kind = result["kind"]
    if kind == "reply":
        print(f"reply from {who}: seq={seq} time={result['rtt_ms']:.3f} ms", flush=True)
    elif kind == "timeout":
        print(f"no reply: seq={seq} (waited {PROBE_PATIENCE:g} s)", flush=True)
    else:
        print(f"{kind.replace('_', ' ')} from {who}: seq={seq}", flush=True)


def run_traceroute(args: argparse.Namespace) -> int:
    return trio.run(_traceroute, args)


async def _traceroute(args: argparse.Namespace) -> int:
    path = control_socket_path(args.state or default_state_dir())
    if not args.json:
        print(f"overlay traceroute to {args.node_id}, {args.max_hops} hops max", flush=True)
    for ttl in range(1, args.max_hops + 1):
        result = await _probe(path, args.node_id, ttl)
        if args.json:
            print(json.dumps({"hop": ttl, **result}), flush=True)
        elif result["kind"] == "timeout":
            print(f"{ttl:3d}  *", flush=True)
        else:
            rtt = "" if result["rtt_ms"] is None else f"{result['rtt_ms']:.3f} ms"
            mark = "  !N (unreachable)" if result["kind"] == "unreachable" else ""
            print(f"{ttl:3d}  {result['responder']}  {result['address'] or '?':<21} "
                  f"{rtt}{mark}", flush=True)
        if result["kind"] in ("reply", "unreachable"):
            return 0 if result["kind"] == "reply" else 1
    print(f"destination not reached within {args.max_hops} hops", file=sys.stderr)
    return 1


def run_route(args: argparse.Namespace) -> int:
    path = control_socket_path(args.state or default_state_dir())
    answer: dict[str, Any] = trio.run(partial(control_request, path, "route", dst=args.node_id))
    if args.json:
        print(json.dumps(answer))
    else:
        print(render_route(answer))
    return 1 if answer["kind"] == "unreachable" else 0


def render_route(answer: dict[str, Any]) -> str:
    """One line, like ``ip route get``: ``DEST via HOP (ADDRESS) metric M ms``."""
    destination, kind = answer["destination"], answer["kind"]
    if kind == "local":
        return f"{destination} local (this node)"
    if kind == "unreachable":
        behind = f" (its home supernode {answer['home']} is)" if answer["home"] else ""
        return f"{destination} unreachable: no route{behind}"
    hop = f"via {answer['next_hop']} ({answer['next_hop_address'] or '?'})"
    if answer["next_hop"] == destination:
        hop = f"direct ({answer['next_hop_address'] or '?'})"
    parts = [destination, hop]
    if kind == "via-home":
        parts.append(f"to its home supernode {answer['home']}")
    elif kind == "default":
        parts.append("default route (home supernode)")
    if answer["metric_us"] is not None:
        parts.append(f"metric {answer['metric_us'] / 1000:.3f} ms")
    if answer["srtt_ms"] is not None:
        parts.append(f"link srtt {answer['srtt_ms']:.3f} ms")
    return " ".join(parts)


__all__ = ["add_parser"]
