"""``overlay demo``: the whole system on 127.0.0.1, a conversation, and a clean stop.

A directory server, three supernodes and four users: alice and bob behind
"NAT" (they do not listen, so nobody can dial them), carol and dave
reachable.  They log in, become contacts and exchange messages; the demo
prints each message with its path (direct, or relayed through which
supernodes) and the time until the recipient's receipt came back.  alice's
and bob's conversation starts relayed; meanwhile their clients punch a hole
(docs/roles.md, Hole punching: on 127.0.0.1 the first SYN is accepted on the
other's outgoing port), the demo waits for the upgrade, says when it came,
and their last message goes direct.
Everything runs in this one process, so Ctrl-C or the end of the demo leaves
nothing behind.  ``--interactive`` then leaves you in the chat as alice.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import trio

from overlay.addresses import format_address
from overlay.chat.events import ChatEvent
from overlay.cli.chat.client import Client
from overlay.cli.chat.interactive import interactive_session
from overlay.cli.common import positive_float, stop_signals
from overlay.ids import NodeId
from overlay.lab.local_network import LocalNetwork, User, local_network
from overlay.net.node import Node

USERS = (("alice", False), ("bob", False), ("carol", True), ("dave", True))
"""Each user and whether it listens; those that do not punch holes."""
PUNCHED = ("alice", "bob", "")
HOMES = {"alice": ("sn1",), "bob": ("sn3",), "carol": ("sn2", "sn3"), "dave": ("sn1", "sn2")}
"""On one machine every supernode is equally near, so the demo spreads the users."""
SCRIPT = (
    ("alice", "bob", "Hi Bob! We are both behind NAT, so supernodes relay this."),
    ("bob", "alice", "Hi Alice, got it. Our clients try to punch a hole meanwhile."),
    ("alice", "carol", "Carol, you are reachable: this goes straight to you."),
    ("carol", "alice", "Direct link, no relay. Welcome!"),
    ("bob", "dave", "Dave, I dialled you directly."),
    ("dave", "bob", "And I answer on the same link."),
    ("carol", "dave", "Two reachable peers: direct, of course."),
    ("dave", "alice", "Alice, you dialled me when you looked me up: I answer on that link."),
    PUNCHED,
    ("bob", "alice", "Our clients punched a hole: no supernode carries this any more."),
)
"""The conversation; PUNCHED: wait until alice and bob are direct, and say so."""
PUNCH_PATIENCE = 10.0
"""How long the demo waits for alice's and bob's upgrade before it says they stayed relayed."""


@dataclass(slots=True)
class Line:
    sender: str
    recipient: str
    text: str
    path: str
    """The path the message was sent on (a relayed message may be acknowledged after an
    upgrade: what it crossed is what counts)."""
    latency: float | None
    event: bool = False
    """Not a message: what happened to a conversation (``text`` says it)."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="run a server, supernodes and chat users on 127.0.0.1; show a conversation",
        description=(
            "Start a directory server, three supernodes and four users on 127.0.0.1: "
            "alice and bob do not listen (like clients behind NAT: supernodes carry their "
            "first messages), carol and dave are reachable (direct links).  The users "
            "log in, become contacts and chat; every message is sealed end to end and "
            "acknowledged by its recipient.  Meanwhile alice's and bob's clients punch a "
            "hole and their conversation moves to a direct link: the demo waits for it "
            "(up to 10 s) and says when it came.  The demo prints the conversation with "
            "each message's path and delivery time, then stops everything.  Nothing is "
            "left running and nothing is kept on disk."
        ),
    )
    parser.add_argument("--timeout", type=positive_float, default=30.0, metavar="SECONDS",
                        help="give up if the conversation is not over within this time "
                             "(default 30)")
    parser.add_argument("--interactive", action="store_true",
                        help="afterwards, stay in the chat as alice (the others answer)")
    parser.set_defaults(run=run, verbose_default=-1)


def run(args: argparse.Namespace) -> int:
    return trio.run(_run, args)


async def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    print("overlay demo: a directory server, three supernodes and four chat users "
          "on 127.0.0.1", flush=True)
    result: int | None = None
    with stop_signals() as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            async with local_network() as network:
                with trio.move_on_after(args.timeout) as limit:
                    await _build(network)
                    lines = await _converse(network)
                    _print_conversation(network, lines, time.monotonic() - started)
                    result = 0
                if limit.cancelled_caught:
                    print(f"\nthe demo did not finish within {args.timeout:g} s",
                          file=sys.stderr)
                    result = 1
                elif args.interactive:
                    await _interactive(network, args)
            nursery.cancel_scope.cancel()
    if result is None:
        print("interrupted; everything stopped.")
        return 130
    print("\nall users, supernodes and the server stopped cleanly.")
    return result


async def _cancel_on_signal(signals: trio.abc.ReceiveChannel[int],
                            scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def _build(network: LocalNetwork) -> None:
    print(f"\n  server  {format_address(network.address)}  key {network.key.hex()[:16]}…")
    for name in ("sn1", "sn2", "sn3"):
        node = await network.add_supernode(name)
        assert node.listen_address is not None
        print(f"  {name}     {format_address(node.listen_address)}  {node.node_id}")
    for name, listen in USERS:
        allowed = frozenset(network.supernodes[sn].node_id for sn in HOMES[name])
        user = await network.add_user(name, listen=listen, punch=not listen,
                                      only_supernodes=allowed)
        edge = user.edge
        where = (f"reachable at {format_address(edge.direct_address)}"
                 if edge.direct_address else "behind NAT: dials out only")
        home = network.name_of(edge.home) if edge.home else "-"
        standby = edge.attachment.standby if edge.attachment else None
        print(f"  {name:<7} {where:<36} home {home}"
              + (f", standby {network.name_of(standby)}" if standby else ""))
    names = [name for name, _ in USERS]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            await network.befriend(a, b)
    print("  (on one machine all supernodes are equally near: the demo spreads the homes)")
    print("  everyone is everyone's contact (requested and accepted through the directory)")
    # Each user looks its contacts up (certificate, presence): reachable ones get direct links.
    for name in names:
        for other in names:
            if other != name:
                await network.users[name].edge.locate(other)
    for name in names:
        expected = {network.users[o].node.node_id for o, listen in USERS
                    if listen and o != name}
        with trio.move_on_after(5):
            await _linked(network.users[name].node, expected)


async def _linked(node: Node, peers: set[NodeId]) -> None:
    await node.wait_until(lambda: peers <= node.neighbours.keys())


async def _converse(network: LocalNetwork) -> list[Line]:
    lines = []
    started = trio.current_time()
    for sender, recipient, text in SCRIPT:
        if (sender, recipient, text) == PUNCHED:
            lines.append(await _wait_punched(network, sender, recipient, started))
            continue
        chat = network.users[sender].chat
        message_id = await chat.send(recipient, text)
        peer_node = network.users[recipient].node.node_id
        path = network.users[sender].edge.path_to(peer_node)
        delivered: ChatEvent | None = None
        async for event in chat.events:
            if event.kind == "delivered" and event.id == message_id:
                delivered = event
                break
            if event.kind == "error" and event.peer == recipient:
                break
        via = " -> ".join(network.name_of(node) for node in path["via"])
        lines.append(Line(sender, recipient, text,
                          "direct" if path["path"] == "direct" else f"relayed via {via}",
                          None if delivered is None else delivered.latency))
    return lines


async def _wait_punched(network: LocalNetwork, a: str, b: str, started: float) -> Line:
    """Wait (at most PUNCH_PATIENCE) until ``a`` has a direct link to ``b``; the event line."""
    user, peer = network.users[a], network.users[b].node.node_id
    with trio.move_on_after(PUNCH_PATIENCE):
        await user.node.wait_until(lambda: user.edge.path_to(peer)["path"] == "direct")
    punch = user.edge.punch
    state = None if punch is None else punch.peers.get(peer)
    since = None if punch is None else punch.path_since(peer)
    if user.edge.path_to(peer)["path"] != "direct" or state is None or since is None:
        why = "" if state is None or state.last_error is None else f" ({state.last_error})"
        return Line(a, b, f"still relayed: no hole punched{why}", "relayed", None, event=True)
    attempts = f"{state.attempts} attempt{'s' if state.attempts != 1 else ''}"
    text = (f"hole punched {max(0.0, since - started):.1f} s into the conversation: "
            f"direct now ({attempts})")
    return Line(a, b, text, "direct", None, event=True)


def _print_conversation(network: LocalNetwork, lines: list[Line], elapsed: float) -> None:
    print("\n  conversation (each message sealed for its recipient; relays see ciphertext)\n")
    for line in lines:
        if line.event:
            print(f"  {line.sender:>5} <> {line.recipient:<5}  {line.text}")
            continue
        took = "not delivered" if line.latency is None else \
            f"delivered in {line.latency * 1000:.1f} ms"
        print(f"  {line.sender:>5} -> {line.recipient:<5}  {line.text}")
        print(f"  {'':>5}    {'':<5}  {took}, {line.path}")
    messages = [line for line in lines if not line.event]
    latencies = [line.latency for line in messages if line.latency is not None]
    relayed = sum(line.path.startswith("relayed") for line in messages)
    median = f"{statistics.median(latencies) * 1000:.1f} ms" if latencies else "-"
    print(f"\n  {len(latencies)} of {len(messages)} delivered; {relayed} relayed, "
          f"{len(messages) - relayed} direct; median delivery {median}; "
          f"{elapsed:.1f} s from start")


async def _interactive(network: LocalNetwork, args: argparse.Namespace) -> None:
    """Leave the user in the chat as alice; bob, carol and dave answer what she says."""
    for user in network.users.values():  # the scripted part was shown already
        while True:
            try:
                user.chat.events.receive_nowait()
            except trio.WouldBlock:
                break
    for name in ("bob", "carol", "dave"):
        network.nursery.start_soon(_answer, network.users[name])
    alice = network.users["alice"]
    client = Client(args, network.address, alice.peer, alice.edge, alice.chat,
                    network.nursery)
    print("\nyou are alice now; bob, carol and dave answer.  Try /msg bob hello, /to carol, "
          "/contacts, /status, /history bob, /help; /quit or Ctrl-C ends the demo.\n",
          flush=True)
    await interactive_session(client)


async def _answer(user: User) -> None:
    async for event in user.chat.events:
        if event.kind == "message" and event.peer is not None:
            await user.chat.send(event.peer, f"{user.name} here: got your {event.text!r}")
