"""One process of ``overlay bench transport --processes``: a sink, a forwarder or a source.

Started as ``python -m overlay.bench.transport_worker JSON`` where JSON names
the role and its arguments::

    {"role": "plain-sink"}                       -> {"port": P}
    {"role": "forwarder", "to": P}               -> {"port": Q}
    {"role": "node-sink"}                        -> {"address": "127.0.0.1:P", "node_id": HEX}
    {"role": "plain-source", "port": P, "size": S, "count": N, "pings": K}
    {"role": "node-source", "connect": "127.0.0.1:P", "peer": HEX, "size": S, "count": N,
     "pings": K}                                 -> {"figures": {...}}

Each prints exactly one JSON line on stdout.  Sinks and forwarders then serve
until their stdin ends; sources measure, print their figures and exit.  Every
role stops as soon as its stdin ends, so none outlives an orchestrator that
died.  A failure prints ``{"error": TEXT}``
and exits 1.  The relays between a node source and a node sink are not
workers: they are ``overlay node`` processes, as users run them.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from typing import Any

import trio

from overlay.addresses import format_address, parse_address
from overlay.bench import transport as bench
from overlay.errors import OverlayError
from overlay.ids import NodeId
from overlay.net.node import Node, NodeConfig


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message, separators=(",", ":")), flush=True)


async def _until_stdin_ends() -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        while await stdin.receive_some(4096):
            pass


async def _serve(role: str) -> None:
    """A sink, serving until cancelled."""
    if role == "plain-sink":
        async with trio.open_nursery() as nursery:
            _say({"port": await bench.serve_plain_sink(nursery)})
        return
    async with Node(bench.new_identity(), NodeConfig()) as node:
        assert node.listen_address is not None
        _say({"address": format_address(node.listen_address), "node_id": node.node_id.hex()})
        await bench.serve_node_sink(node)


async def _forward(to: int) -> None:
    async with trio.open_nursery() as nursery:
        _say({"port": await bench.serve_forwarder(nursery, to)})


async def _node_source(args: dict[str, Any]) -> bench.Figures:
    async with Node(bench.new_identity(), NodeConfig(listen=None)) as node:
        node.connect(parse_address(str(args["connect"])))
        return await bench.node_source(node, NodeId(bytes.fromhex(str(args["peer"]))),
                                       int(args["size"]), int(args["count"]),
                                       int(args["pings"]))


async def _main(args: dict[str, Any]) -> None:
    """The role, until it is done or stdin ends, whichever comes first."""
    async with trio.open_nursery() as nursery:
        async def watch_stdin() -> None:
            await _until_stdin_ends()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_stdin)
        await _role(args)
        nursery.cancel_scope.cancel()


async def _role(args: dict[str, Any]) -> None:
    role = args.get("role")
    if role in ("plain-sink", "node-sink"):
        await _serve(str(role))
    elif role == "forwarder":
        await _forward(int(args["to"]))
    elif role == "plain-source":
        figures = await bench.plain_source(int(args["port"]), int(args["size"]),
                                           int(args["count"]), int(args["pings"]))
        _say({"figures": asdict(figures)})
    elif role == "node-source":
        _say({"figures": asdict(await _node_source(args))})
    else:
        raise OverlayError(f"unknown role {role!r}")


def main() -> int:
    try:
        args = json.loads(sys.argv[1]) if len(sys.argv) == 2 else None
        if not isinstance(args, dict):
            raise OverlayError("usage: python -m overlay.bench.transport_worker JSON")
        trio.run(_main, args)
    except (OverlayError, OSError, KeyError, ValueError, trio.BrokenResourceError) as exc:
        _say({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
