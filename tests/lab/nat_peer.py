"""One user of the NAT lab tests: an edge client that sends or receives numbered messages.

Run inside a lab host (``python tests/lab/nat_peer.py ...``).  It registers
USER (if new), makes PEER a contact (asking, or accepting PEER's request),
starts an edge client (`overlay.roles.edge.EdgeClient`, as `overlay client`
does) and then either sends COUNT messages on one reliable channel or receives
them.  It reports on stdout, one JSON object per line:

- ``{"event": "ready", ...}`` once attached (reachability as the server saw it, home);
- with ``--pause-at K``: ``{"event": "paused", "home": ...}`` after K messages, then it
  waits for a line on stdin (the test kills a supernode meanwhile);
- ``{"event": "sent", ...}`` once the peer acknowledged everything, or
  ``{"event": "received", ...}`` with what arrived (count, in order, duplicates).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from overlay.addresses import parse_address
from overlay.directory.client.connection import DirectoryClient
from overlay.errors import DirectoryError
from overlay.net.node import Node, NodeConfig
from overlay.proto.link import LinkConfig
from overlay.roles.edge import Credentials, EdgeClient
from overlay.state import load_identity

PASSWORD = "correct horse battery"
LIMIT = 60.0


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def befriend(client: DirectoryClient, user: str, peer: str) -> None:
    """Register, log in, and make ``peer`` an accepted contact (whoever asks first)."""
    try:
        await client.register(user, PASSWORD)
    except DirectoryError as exc:
        if exc.status != 409:
            raise
    await client.login(user, PASSWORD)
    with trio.fail_after(LIMIT):
        while True:
            states = {c.username: c.state for c in await client.contacts()}
            state = states.get(peer)
            if state == "accepted":
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
    identity = load_identity(args.state)
    server = parse_address(args.server)
    key = bytes.fromhex(args.key)
    async with DirectoryClient.connect(server, identity, server_key=key) as client:
        await befriend(client, args.user, args.peer)
    listen = parse_address(args.listen) if args.listen else None
    config = NodeConfig(listen=listen, edge=True,
                        link=LinkConfig(hello_interval=0.5, dead_after=3))
    async with Node(identity, config) as node, trio.open_nursery() as nursery:
        role = EdgeClient(node, Credentials(args.user, password=PASSWORD), server=server,
                          server_key=key)
        await nursery.start(role.run)
        say("ready", node_id=node.node_id.hex(), reachable=role.reachable,
            reason=role.reachability_reason, home=role.home.hex() if role.home else None)
        if args.send:
            await send(node, role, args)
        else:
            await receive(node, role, args.receive)
        nursery.cancel_scope.cancel()


async def send(node: Node, role: EdgeClient, args: argparse.Namespace) -> None:
    with trio.fail_after(LIMIT):
        while True:  # the peer may not be attached (no home in its presence) yet
            peer = await role.locate(args.peer)
            if role.peers[args.peer].presence.home_node is not None:
                break
            await trio.sleep(0.2)
        async with node.open_channel(peer) as channel:
            for i in range(args.send):
                await channel.send(b"message %d" % i)
                if i + 1 == args.pause_at:
                    await channel.wait_acknowledged()
                    say("paused", sent=i + 1, home=role.home.hex() if role.home else None)
                    await trio.to_thread.run_sync(sys.stdin.readline)
            await channel.wait_acknowledged()
            stats = channel.statistics()
    say("sent", count=args.send, path=role.path_to(peer), failovers=role.failovers,
        home=role.home.hex() if role.home else None, retransmissions=stats.retransmissions)


async def receive(node: Node, role: EdgeClient, count: int) -> None:
    got: list[bytes] = []
    with trio.fail_after(LIMIT * 2):
        channel = await node.accept_channel()
        async with channel:
            while len(got) < count:
                got.append(await channel.receive())
    expected = [b"message %d" % i for i in range(count)]
    say("received", count=len(got), in_order=got == expected,
        duplicates=len(got) - len(set(got)), home=role.home.hex() if role.home else None)


if __name__ == "__main__":
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
    trio.run(main, parser.parse_args())
