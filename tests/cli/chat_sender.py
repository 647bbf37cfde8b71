"""A user who writes to someone without the chat's consent: the tests' hostile sender.

Run as ``python tests/cli/chat_sender.py ...`` (a real process, like overlay/lab/peer.py).
It logs in as USER, attaches as an edge client, and sends one properly sealed chat
message to the node TO_NODE (public key TO_KEY, attached to supernode TO_HOME) on a
reliable channel, without asking the directory: what a stranger who learned those three
values, or a removed contact who remembers them, can do.  Prints one JSON line once the
transport acknowledged the bytes: ``{"event": "sent", "id": HEX}``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from pathlib import Path

import trio

from overlay.addresses import parse_address
from overlay.chat.envelope import ChatMessage, seal
from overlay.ids import NodeId
from overlay.net.node import Node, NodeConfig
from overlay.roles.edge import Credentials, EdgeClient, EdgeConfig
from overlay.state import load_identity

LIMIT = 30.0


async def main(args: argparse.Namespace) -> None:
    identity = load_identity(args.state)
    target = NodeId.from_hex(args.to_node)
    with trio.fail_after(LIMIT):
        async with Node(identity, NodeConfig(edge=True)) as node, trio.open_nursery() as nursery:
            role = EdgeClient(node, Credentials(args.user, password=args.password),
                              server=parse_address(args.server),
                              server_key=bytes.fromhex(args.server_key),
                              config=EdgeConfig(supernode_ok=False))
            await nursery.start(role.run)
            assert role.certificate is not None
            node.set_location(target, NodeId.from_hex(args.to_home))
            message = ChatMessage(secrets.token_bytes(16), args.user, args.to_user, time.time(),
                                  args.text)
            envelope = seal(identity, role.certificate.raw, bytes.fromhex(args.to_key), message)
            async with node.open_channel(target) as channel:
                await channel.send(envelope)
                await channel.wait_acknowledged()
            print(json.dumps({"event": "sent", "id": message.id.hex()}), flush=True)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("--server", "--server-key", "--user", "--password", "--to-user", "--to-node",
                 "--to-key", "--to-home", "--text"):
        parser.add_argument(name, required=True)
    parser.add_argument("--state", required=True, type=Path)
    trio.run(main, parser.parse_args())
