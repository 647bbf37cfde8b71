"""``overlay demo``: a small local network to watch, then a clean stop.

Three nodes in a line on 127.0.0.1 (A - B - C), each told only of its
neighbour; the demo waits until every link is authenticated and has a few RTT
samples, prints the ids and the measured latencies, and shuts everything down.
"""

from __future__ import annotations

import argparse
import secrets
import sys

import trio

from overlay.cli.common import positive_float, stop_signals
from overlay.errors import OverlayError
from overlay.ids import SEED_LEN, Identity
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig

NAMES = ("A", "B", "C")
RTT_SAMPLES = 3


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="start three nodes in a line on 127.0.0.1 and show their links",
        description=(
            "Start three nodes in a line on 127.0.0.1 (A - B - C, each told only of its "
            "neighbour), wait for the authenticated links and their round-trip times, "
            "print them and stop.  Nothing is written to disk."
        ),
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=15.0, metavar="SECONDS",
        help="give up if the links are not measured within this time (default 15)",
    )
    parser.set_defaults(run=run, verbose_default=-1)


def run(args: argparse.Namespace) -> int:
    return trio.run(_run, args)


async def _run(args: argparse.Namespace) -> int:
    config = LinkConfig(hello_interval=0.2)
    print("overlay demo: three nodes in a line on 127.0.0.1, each knowing only its neighbour")
    with stop_signals() as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            ok = await _line_of_three(config, args.timeout)
            nursery.cancel_scope.cancel()
    if ok is None:
        print("interrupted; all nodes stopped.")
        return 130
    return 0 if ok else 1


async def _cancel_on_signal(signals: trio.abc.ReceiveChannel[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def _line_of_three(config: LinkConfig, limit: float) -> bool | None:
    identities = [Identity.from_seed(secrets.token_bytes(SEED_LEN)) for _ in NAMES]
    node_config = NodeConfig(listen=("127.0.0.1", 0), link=config)
    ok: bool | None = None
    with trio.CancelScope():
        async with Node(identities[0], node_config) as a, Node(identities[1], node_config) as b, \
                Node(identities[2], node_config) as c:
            nodes = (a, b, c)
            print()
            print("  node  id                                listening on")
            for name, node in zip(NAMES, nodes, strict=True):
                assert node.listen_address is not None
                host, port = node.listen_address
                print(f"  {name}     {node.node_id}  {host}:{port}")
            assert a.listen_address is not None and b.listen_address is not None
            b.connect(a.listen_address)
            c.connect(b.listen_address)
            pairs = ((a, b), (b, c))
            with trio.move_on_after(limit) as waited:
                for left, right in pairs:
                    await _wait_measured(left, right)
            if waited.cancelled_caught:
                print(f"\nthe links were not measured within {limit:g} s", file=sys.stderr)
                ok = False
            else:
                print()
                print("  link  srtt        rttvar      samples")
                for (left, right), label in zip(pairs, ("A-B", "B-C"), strict=True):
                    rtt = left.neighbours[right.node_id].core.rtt
                    assert rtt.srtt is not None and rtt.rttvar is not None
                    print(f"  {label}   {rtt.srtt * 1000:.3f} ms    {rtt.rttvar * 1000:.3f} ms    "
                          f"{rtt.samples}")
                ok = True
        print("\nall nodes stopped cleanly.")
    return ok


async def _wait_measured(left: Node, right: Node) -> None:
    def measured() -> bool:
        link = left.neighbours.get(right.node_id)
        return link is not None and link.core.rtt.samples >= RTT_SAMPLES

    await left.wait_until(measured)


__all__ = ["OverlayError", "add_parser"]
