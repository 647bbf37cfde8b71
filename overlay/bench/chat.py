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

import time
from dataclasses import dataclass
from typing import Any

import trio

from overlay.bench.progress import Progress
from overlay.errors import OverlayError
from overlay.lab.local_network import LocalNetwork, User, local_network
from overlay.stats import quantile

TARGETS_MS = {"p50_ms": 10.0, "p99_ms": 50.0}
"""The issue's targets for the relayed chat (reported beside the figures, never asserted)."""
DIRECT_MESSAGES = 200
"""At most this many messages over the direct link: its figure is the second baseline."""


@dataclass(frozen=True)
class ChatConfig:
    messages: int = 1000
    """Messages to time over the relayed path (one at a time)."""


@dataclass(frozen=True)
class Latencies:
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples: list[float]) -> Latencies:
        def ms(q: float) -> float:
            return round((quantile(samples, q) or 0.0) * 1000, 3)

        return cls(ms(0.5), ms(0.99), ms(1.0))

    def to_json(self) -> dict[str, float]:
        return {"p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms}


@dataclass(frozen=True)
class ChatReport:
    messages: int
    path_kind: str
    """How alice reaches bob: "relayed" when the setup is right."""
    via: tuple[str, ...]
    """The supernodes on that path, by name."""
    chat_relayed: Latencies
    echo_same_path: Latencies
    chat_direct: Latencies
    direct_path: str
    """How alice reaches carol (who listens): "direct" when the setup is right."""
    ratio_p50_chat_to_echo: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "path": {"kind": self.path_kind, "via": list(self.via)},
            "chat_relayed": self.chat_relayed.to_json(),
            "echo_same_path": self.echo_same_path.to_json(),
            "chat_direct": {**self.chat_direct.to_json(), "path": self.direct_path},
            "ratio_p50_chat_to_echo": self.ratio_p50_chat_to_echo,
            "targets": dict(TARGETS_MS),
            "seconds": self.seconds,
        }


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


async def run(config: ChatConfig, progress: Progress) -> ChatReport:
    """The network of the module docstring, the three measurements, the report."""
    count = config.messages
    started = time.monotonic()
    async with local_network() as network:
        progress("starting", 0.0)
        await _setup(network)
        alice, bob = network.users["alice"], network.users["bob"]
        carol = network.users["carol"]
        path = alice.edge.path_to(bob.node.node_id)
        relayed = await _chat_latencies(alice, "bob", count, "relayed chat", progress)
        echoes = await _echo_rtts(alice, bob, count)
        direct = await _chat_latencies(alice, "carol", min(count, DIRECT_MESSAGES),
                                       "direct chat", progress)
        direct_path = alice.edge.path_to(carol.node.node_id)["path"]
    relayed_figures = Latencies.of(relayed)
    echo_figures = Latencies.of(echoes)
    return ChatReport(
        messages=count, path_kind=path["path"],
        via=tuple(network.name_of(node) for node in path["via"]),
        chat_relayed=relayed_figures, echo_same_path=echo_figures,
        chat_direct=Latencies.of(direct), direct_path=direct_path,
        ratio_p50_chat_to_echo=round(relayed_figures.p50_ms / echo_figures.p50_ms, 2),
        seconds=round(time.monotonic() - started, 1),
    )


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
