"""One user of the NAT lab: an edge client that sends or receives numbered messages.

The lab tests (tests/lab/) and ``overlay bench nat`` (:mod:`overlay.bench.nat`)
both run it, which is why it lives in the package and not among the tests.
Run inside a lab host (``python -m overlay.lab.peer ...``).  It registers
USER (if new), makes PEER a contact (asking, or accepting PEER's request),
starts an edge client (`overlay.roles.edge.EdgeClient`, as `overlay client`
does) and then either sends COUNT messages on one reliable channel or receives
them.  It reports on stdout, one JSON object per line:

- ``{"event": "ready", ...}`` once attached (reachability as the server saw it, home);
- with ``--pause-at K``: ``{"event": "paused", "home": ...}`` after K messages, then it
  waits for a line on stdin (the test kills a supernode meanwhile);
- with ``--punch``: ``{"event": "path", "path": "direct" | "relayed", "at": I}`` each
  time the path to the peer changes while sending (I messages sent so far);
- with ``--hold``: ``{"event": "acknowledged", "path": ...}`` once everything is
  acknowledged, then it waits for a line on stdin before it closes the channel;
- with ``--bench K`` (a sender, with ``--punch``): :mod:`overlay.lab.peer_bench`'s
  session, which reports ``window`` / ``window-done`` events and a ``session`` one;
- ``{"event": "sent", ...}`` once the peer acknowledged everything, or
  ``{"event": "received", ...}`` with what arrived (count, in order, duplicates).

``--until-closed`` (a receiver) receives until the sender's ``end`` message
instead of a fixed count.  ``--punch`` turns hole punching on (one outgoing
port, docs/roles.md); without it
the client never punches, so a conversation between two NAT-ed clients stays
relayed.  ``--interval S`` paces the messages; ``--settle`` waits, after the last
acknowledgement, until punching towards the peer is settled (direct, or a round
of attempts given up) and reports it in ``sent``.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import trio

from overlay.addresses import parse_address
from overlay.directory.client.connection import DirectoryClient
from overlay.errors import DirectoryError, TransportError
from overlay.ids import NodeId
from overlay.lab.stalls import report_if_stuck
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.proto.punch import PunchConfig
from overlay.roles.edge import Credentials, EdgeClient, EdgeConfig
from overlay.state import load_identity

log = logging.getLogger("overlay.lab.peer")

PASSWORD = "correct horse battery"
LIMIT = 60.0
LINGER = 5.0
STALL_REPORT = 45.0
"""Log the task tree if not ready by then (the tests give up waiting at 60 s)."""


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def befriend(client: DirectoryClient, user: str, peer: str) -> None:
    """Register, log in, and make ``peer`` an accepted contact (whoever asks first)."""
    try:
        await client.register(user, PASSWORD)
    except DirectoryError as exc:
        if exc.status != 409:
            raise
    log.info("%s registered; logging in", user)
    await client.login(user, PASSWORD)
    log.info("%s logged in; making %s a contact", user, peer)
    with trio.fail_after(LIMIT):
        while True:
            states = {c.username: c.state for c in await client.contacts()}
            state = states.get(peer)
            if state == "accepted":
                log.info("%s and %s are contacts", user, peer)
                return
            try:
                if state == "incoming":
                    await client.contact_accept(peer)
                elif state is None:
                    await client.contact_request(peer)
            except DirectoryError as exc:
                # 409: both asked at once and the server already made them contacts
                # (404 is kept for servers older than issue #11's, which refused a
                # request to a name not yet registered).  Either way, look again.
                if exc.status not in (404, 409):
                    raise
            await trio.sleep(0.2)


async def main(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        watchdog = trio.CancelScope()

        async def watch() -> None:
            with watchdog:
                await report_if_stuck(STALL_REPORT, "start-up (register, befriend, attach)")

        nursery.start_soon(watch)
        await run_peer(args, ready=watchdog.cancel)


async def run_peer(args: argparse.Namespace, *, ready: Callable[[], None]) -> None:
    """Befriend the peer, attach, then send or receive; ``ready()`` once attached."""
    identity = load_identity(args.state)
    log.info("connecting to the directory at %s", args.server)
    server = parse_address(args.server)
    key = bytes.fromhex(args.key)
    async with DirectoryClient.connect(server, identity, server_key=key) as client:
        await befriend(client, args.user, args.peer)
    listen = parse_address(args.listen) if args.listen else None
    config = NodeConfig(listen=listen, edge=True, outgoing_port=0 if args.punch else None,
                        link=LinkConfig(hello_interval=0.5, dead_after=3))
    edge = EdgeConfig(punch=args.punch, punch_config=PunchConfig(
        answer_timeout=3.0, dial_timeout=5.0, start_delay=args.start_delay))
    async with Node(identity, config) as node, trio.open_nursery() as nursery:
        log.info("node up; starting the edge client")
        role = EdgeClient(node, Credentials(args.user, password=PASSWORD), server=server,
                          server_key=key, config=edge)
        await nursery.start(role.run)
        say("ready", node_id=node.node_id.hex(), reachable=role.reachable,
            reason=role.reachability_reason, home=role.home.hex() if role.home else None)
        ready()
        faulthandler.cancel_dump_traceback_later()
        if args.bench:
            from overlay.lab.peer_bench import bench_session

            await bench_session(node, role, args)
        elif args.send:
            await send(node, role, args)
        elif args.until_closed:
            await receive_until_closed(node)
        else:
            await receive(node, role, args.receive, settled=args.settle)
        nursery.cancel_scope.cancel()


async def locate(role: EdgeClient, user: str) -> NodeId:
    """``user``'s node id, once its presence names a home (it may not be attached yet)."""
    with trio.fail_after(LIMIT):
        while True:
            peer = await role.locate(user)
            if role.peers[user].presence.home_node is not None:
                return peer
            await trio.sleep(0.2)


async def send(node: Node, role: EdgeClient, args: argparse.Namespace) -> None:
    peer = await locate(role, args.peer)
    with trio.fail_after(LIMIT):
        path: Any = None
        async with node.open_channel(peer) as channel:
            for i in range(args.send):
                if args.punch and (now := role.path_to(peer)["path"]) != path:
                    path = now
                    say("path", path=now, at=i)
                await channel.send(b"message %d" % i)
                if args.interval:
                    await trio.sleep(args.interval)
                if i + 1 == args.pause_at:
                    await channel.wait_acknowledged()
                    say("paused", sent=i + 1, home=role.home.hex() if role.home else None)
                    await trio.to_thread.run_sync(sys.stdin.readline)
            await channel.wait_acknowledged()
            stats = channel.statistics()
            if args.settle:
                await settle(role, peer)
            path = role.path_to(peer)  # before closing: the peer hangs up once we do
            if args.hold:
                say("acknowledged", path=path)
                await trio.to_thread.run_sync(sys.stdin.readline)
    punch = role.punch.peer_status(peer) if role.punch else None
    say("sent", count=args.send, path=path, failovers=role.failovers,
        home=role.home.hex() if role.home else None, retransmissions=stats.retransmissions,
        punch=None if punch is None else punch.to_json(),
        mapping=role.punch.mapping().value if role.punch else None)


async def settle(role: EdgeClient, peer: Any) -> None:
    """Wait until punching towards ``peer`` is direct or has given up one round."""
    assert role.punch is not None
    attempts = role.punch.config.attempts
    seen = False
    with trio.move_on_after(LIMIT):
        while True:
            status = role.punch.peer_status(peer)
            if status is None and seen:
                return  # the conversation ended and punching forgot the peer
            seen = seen or status is not None
            if status is not None and (status.state == "direct" or (
                    status.state == "relayed" and status.attempts >= attempts)):
                return
            await trio.sleep(0.2)


END = b"end"
"""The last message of an ``--until-closed`` conversation (not counted)."""


async def receive_until_closed(node: Node) -> None:
    """Receive on the first channel until :data:`END` (bounded by ``LIMIT * 5``).

    An end message, not the channel's close: a sender that exits right after
    closing may take the close with it, and the receiver would wait on."""
    got: list[bytes] = []
    with trio.fail_after(LIMIT * 5):
        channel = await node.accept_channel()
        async with channel:
            with contextlib.suppress(TransportError):
                while (message := await channel.receive()) != END:
                    got.append(message)
            # As in receive(): stay a moment, so our last acknowledgements get out
            # (and a duplicate, were there one, would be counted).
            with trio.move_on_after(1.0), contextlib.suppress(TransportError):
                while True:
                    got.append(await channel.receive())
    expected = [b"message %d" % i for i in range(len(got))]
    say("received", count=len(got), in_order=got == expected,
        duplicates=len(got) - len(set(got)))


async def receive(node: Node, role: EdgeClient, count: int, *, settled: bool) -> None:
    got: list[bytes] = []
    with trio.fail_after(LIMIT * 2):
        channel = await node.accept_channel()
        async with channel:
            while len(got) < count:
                got.append(await channel.receive())
            if settled:
                await settle(role, channel.peer)
            path = role.path_to(channel.peer)
            # Stay until the sender closes (or a few seconds): leaving at once could lose
            # our last acknowledgements with the link, and the sender would wait for them.
            with trio.move_on_after(LINGER), contextlib.suppress(TransportError):
                while True:
                    got.append(await channel.receive())  # (a duplicate, were there one)
    expected = [b"message %d" % i for i in range(count)]
    say("received", count=len(got), in_order=got == expected,
        duplicates=len(got) - len(set(got)), home=role.home.hex() if role.home else None,
        path=path)


def cli() -> None:
    # Punching says what it tries and why it gave up: the hard-hard test reads it.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(name)s: %(message)s")
    logging.getLogger("overlay.roles.punch").setLevel(logging.INFO)
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--state", required=True, type=__import__("pathlib").Path)
    parser.add_argument("--listen")
    parser.add_argument("--send", type=int, default=0)
    parser.add_argument("--receive", type=int, default=0)
    parser.add_argument("--pause-at", type=int, default=0)
    parser.add_argument("--punch", action="store_true")
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--settle", action="store_true")
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--until-closed", action="store_true")
    parser.add_argument("--bench", type=int, default=0, metavar="K")
    parser.add_argument("--start-delay", type=float, default=0.0)
    parser.add_argument("--session-limit", type=float, default=60.0)
    parser.add_argument("--log", help="also log everything at INFO and above to this file")
    arguments = parser.parse_args()
    # A peer stuck before it reports shows where (the tests wait 60 s for a line): the
    # trio task tree (report_if_stuck) and, were the event loop itself blocked, threads.
    faulthandler.dump_traceback_later(50, repeat=True)
    if arguments.log:
        handler = logging.FileHandler(arguments.log)
        handler.setFormatter(logging.Formatter("%(relativeCreated)8.0f %(name)s: %(message)s"))
        logging.getLogger("overlay").addHandler(handler)
        logging.getLogger("overlay").setLevel(logging.INFO)
    trio.run(main, arguments)


if __name__ == "__main__":
    cli()
