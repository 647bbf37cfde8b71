"""``overlay bench chat``: how long until a chat message's receipt comes back, on 127.0.0.1.

The system of ``overlay demo`` in one process: a directory server, two
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

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import trio

from overlay.cli.common import positive_int, run_interruptibly
from overlay.cli.progress import Progress, ProgressBar
from overlay.errors import OverlayError
from overlay.lab.local_network import LocalNetwork, User, local_network
from overlay.stats import quantile


def add_parser(kinds: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    parser = kinds.add_parser(
        "chat", parents=[common],
        help="delivered-receipt time of chat messages through two supernodes",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=positive_int, default=1000, metavar="N",
                        help="messages to time (default 1000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run, verbose_default=-2)


def run(args: argparse.Namespace) -> int:
    bar = ProgressBar()
    try:
        result = run_interruptibly(measure, args.messages, bar)
    finally:
        bar.done()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result))
    return 0


def _summary(samples: list[float]) -> dict[str, float]:
    return {name: round((quantile(samples, q) or 0.0) * 1000, 3)
            for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99), ("max_ms", 1.0))}


async def _chat_latencies(sender: User, recipient: str, count: int, label: str,
                          progress: Progress) -> list[float]:
    latencies = []
    for i in range(count):
        message_id = await sender.chat.send(recipient, f"message {i} " + "x" * 40)
        with trio.fail_after(10):
            async for event in sender.chat.events:
                if event.kind == "delivered" and event.id == message_id:
                    assert event.latency is not None
                    latencies.append(event.latency)
                    break
                if event.kind in ("error", "rejected"):
                    raise OverlayError(f"{label}: {event.detail}")
        progress(label, (i + 1) / count)
    return latencies


async def _echo_rtts(sender: User, target: User, count: int) -> list[float]:
    rtts = []
    for _ in range(count):
        result = await sender.node.echo(target.node.node_id)
        if result.rtt is None:
            raise OverlayError(f"echo from {sender.name} to {target.name}: {result.kind}")
        rtts.append(result.rtt)
    return rtts


async def measure(count: int, progress: Progress) -> dict[str, Any]:
    started = time.monotonic()
    async with local_network() as network:
        progress("starting", 0.0)
        await _setup(network)
        alice, bob = network.users["alice"], network.users["bob"]
        carol = network.users["carol"]
        path = alice.edge.path_to(bob.node.node_id)
        relayed = await _chat_latencies(alice, "bob", count, "relayed chat", progress)
        echoes = await _echo_rtts(alice, bob, count)
        direct = await _chat_latencies(alice, "carol", min(count, 200), "direct chat",
                                       progress)
        direct_path = alice.edge.path_to(carol.node.node_id)["path"]
    relayed_figures = _summary(relayed)
    echo_figures = _summary(echoes)
    return {
        "messages": count,
        "path": {"kind": path["path"],
                 "via": [network.name_of(node) for node in path["via"]]},
        "chat_relayed": relayed_figures,
        "echo_same_path": echo_figures,
        "chat_direct": {**_summary(direct), "path": direct_path},
        "ratio_p50_chat_to_echo": round(relayed_figures["p50_ms"] / echo_figures["p50_ms"], 2),
        "targets": {"p50_ms": 10.0, "p99_ms": 50.0},
        "seconds": round(time.monotonic() - started, 1),
    }


async def _setup(network: LocalNetwork) -> None:
    sn1 = await network.add_supernode("sn1")
    sn2 = await network.add_supernode("sn2")
    await network.add_user("alice", listen=False, only_supernodes=frozenset({sn1.node_id}))
    await network.add_user("bob", listen=False, only_supernodes=frozenset({sn2.node_id}))
    await network.add_user("carol", listen=True)
    for a, b in (("alice", "bob"), ("alice", "carol")):
        await network.befriend(a, b)
    for name in ("bob", "carol"):
        await network.users["alice"].edge.locate(name)
    carol = network.users["carol"].node.node_id
    alice = network.users["alice"].node
    with trio.move_on_after(5):
        await alice.wait_until(lambda: carol in alice.neighbours)


def render(result: dict[str, Any]) -> str:
    relayed, echo, direct = (result["chat_relayed"], result["echo_same_path"],
                             result["chat_direct"])
    via = " -> ".join(result["path"]["via"])
    return "\n".join([
        f"chat delivered-receipt time, {result['messages']} messages, one at a time",
        f"  path alice -> bob: {result['path']['kind']} via {via}",
        "",
        "                               p50 ms    p99 ms    max ms",
        f"  chat, relayed (2 supernodes) {relayed['p50_ms']:8.3f}  {relayed['p99_ms']:8.3f}"
        f"  {relayed['max_ms']:8.3f}   target p50 < 10, p99 < 50",
        f"  echo, same path (baseline)   {echo['p50_ms']:8.3f}  {echo['p99_ms']:8.3f}"
        f"  {echo['max_ms']:8.3f}",
        f"  chat, {direct['path']} link            {direct['p50_ms']:8.3f}  "
        f"{direct['p99_ms']:8.3f}  {direct['max_ms']:8.3f}",
        "",
        f"  chat / echo at p50: {result['ratio_p50_chat_to_echo']:.2f}x "
        "(sealing, history on disk, the receipt)",
        f"  {result['seconds']:.1f} s in all",
    ])
