"""``overlay bench transport --processes``: every node and every forwarder in its own process.

In one process the whole line of nodes shares one core (the GIL), so a relay
count of 3 measures four nodes' work on one core, not a relay.  Here:

- overlay, h relays: a sink node and a source node, each a
  :mod:`overlay.bench.transport_worker` process running the same :class:`Node`
  as ``overlay node``, and h ``overlay node`` processes between them, started
  exactly as a user starts them (``--listen 127.0.0.1:0 --connect NEXT``);
- baseline, h relays: a plain sink, a plain source and h plain trio forwarder
  processes (the same code as the in-process baseline);
- handshakes: this process dials an ``overlay node`` process with a fresh node
  each time, beside bare TCP connects to a plain sink process.

The baseline's processes are stopped before the overlay's start, so the two
never compete for the cores.  Since each relay is a process of its own, its
CPU time (user + system, from /proc) over the measurement is reported per
message too: a figure that a busy machine does not distort as much as rates.
Every child is stopped (end of its stdin or SIGTERM, then SIGKILL) on the way
out, whether the run ends, fails, times out or is interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import trio

from overlay.addresses import Address, parse_address
from overlay.bench import transport as bench
from overlay.bench.children import Children
from overlay.bench.directory_worker import LineReader
from overlay.bench.progress import Progress
from overlay.bench.transport import (
    Figures,
    Handshakes,
    TransportBenchError,
    TransportConfig,
)
from overlay.errors import ControlError
from overlay.net.control import control_request
from overlay.state import control_socket_path

START_TIMEOUT = 30.0
"""Seconds a child may take to say it is ready (Python start-up on a busy machine)."""
STOP_TIMEOUT = 5.0


class _Children(Children):
    """The processes of one phase, with a log file each; leaving it stops every one."""

    def __init__(self, root: Path) -> None:
        super().__init__(grace=STOP_TIMEOUT)
        self._root = root
        self._logs: list[IO[bytes]] = []
        self.relays: list[int] = []
        """Process ids of the relays (forwarders or ``overlay node``), in line order."""

    async def __aenter__(self) -> _Children:
        return self

    async def aclose(self) -> None:
        await super().aclose()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def _log(self, name: str) -> IO[bytes]:
        log = (self._root / f"{name}.log").open("wb")
        self._logs.append(log)
        return log

    def _tail(self, name: str) -> str:
        for log in self._logs:
            log.flush()
        text = (self._root / f"{name}.log").read_text(errors="replace").strip()
        return f": {text.splitlines()[-1]}" if text else ""

    async def worker(self, name: str, args: dict[str, Any], *, relay: bool = False,
                     patience: float = START_TIMEOUT) -> dict[str, Any]:
        """Start a worker; its one JSON line (a source's line comes once it has measured)."""
        process = await self.start(
            [sys.executable, "-m", "overlay.bench.transport_worker", json.dumps(args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log(name))
        if relay:
            self.relays.append(process.pid)
        assert process.stdout is not None
        line = None
        with trio.move_on_after(patience):
            line = await LineReader(process.stdout).readline()
        if not line:  # its output ended: give it a moment to exit, so the report says why
            with trio.move_on_after(2):
                await process.wait()
        answer: dict[str, Any] = json.loads(line) if line else {}
        if "error" in answer or not answer:
            why = answer.get("error") or (
                f"it exited with status {process.returncode}{self._tail(name)}"
                if process.poll() is not None else f"no answer within {patience:g} s")
            raise TransportBenchError(f"the {name} process failed: {why}")
        return answer

    async def node(self, name: str, connect: Address | None) -> Address:
        """``overlay node`` (a relay linked to ``connect`` if given); the address it listens on."""
        state = self._root / name
        state.mkdir(mode=0o700)
        process = await self.start(
            [sys.executable, "-m", "overlay", "node", "-qq", "--state", str(state),
             "--listen", "127.0.0.1:0",
             *([] if connect is None else ["--connect", f"{connect[0]}:{connect[1]}"])],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log(name))
        if connect is not None:
            self.relays.append(process.pid)
        with trio.move_on_after(START_TIMEOUT):
            while process.poll() is None:
                with contextlib.suppress(ControlError):
                    status = await control_request(control_socket_path(state), "status")
                    if isinstance(status, dict) and status.get("listen"):
                        return parse_address(str(status["listen"]))
                await trio.sleep(0.05)
        why = (f"it exited with status {process.returncode}{self._tail(name)}"
               if process.poll() is not None else f"no answer within {START_TIMEOUT:g} s")
        raise TransportBenchError(f"the {name} node (overlay node) did not start: {why}")


def _measure(config: TransportConfig) -> dict[str, int]:
    return {"size": config.size, "count": config.count, "pings": config.pings}


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes ``pids`` so far (Linux /proc)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue  # not Linux, or gone: counted as nothing
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _per_message_us(cpu: float, relays: int, config: TransportConfig) -> float:
    return round(cpu * 1e6 / relays / config.count, 1) if relays else 0.0


async def _baseline(root: Path, relays: int,
                    config: TransportConfig) -> tuple[Figures, float]:
    async with _Children(root) as children:
        port = int((await children.worker("plain-sink", {"role": "plain-sink"}))["port"])
        for index in range(relays):
            port = int((await children.worker(f"forwarder-{index}",
                                              {"role": "forwarder", "to": port},
                                              relay=True))["port"])
        before = _cpu_seconds(children.relays)
        answer = await children.worker(
            "plain-source", {"role": "plain-source", "port": port, **_measure(config)},
            patience=config.time_limit)
        cpu = _cpu_seconds(children.relays) - before
    return Figures.from_json(answer["figures"]), _per_message_us(cpu, relays, config)


async def _overlay(root: Path, relays: int,
                   config: TransportConfig) -> tuple[Figures, float]:
    async with _Children(root) as children:
        sink = await children.worker("node-sink", {"role": "node-sink"})
        address = parse_address(str(sink["address"]))
        for index in reversed(range(relays)):
            address = await children.node(f"relay-{index}", address)
        before = _cpu_seconds(children.relays)
        answer = await children.worker(
            "node-source", {"role": "node-source", "connect": f"{address[0]}:{address[1]}",
                            "peer": sink["node_id"], **_measure(config)},
            patience=config.time_limit)
        cpu = _cpu_seconds(children.relays) - before
    return Figures.from_json(answer["figures"]), _per_message_us(cpu, relays, config)


async def _handshakes(root: Path, count: int, progress: Progress) -> Handshakes:
    async with _Children(root) as children:
        sink = await children.worker("plain-sink", {"role": "plain-sink"})
        target = await children.node("handshake-target", None)
        links = await bench.handshake_times(target, count, progress, "handshakes")
        connects = await bench.tcp_connect_times(int(sink["port"]), count)
    return bench.handshakes(links, connects)


async def _run(root: Path, config: TransportConfig,
               progress: Progress) -> bench.TransportReport:
    results = []
    direct: tuple[Figures, Figures] | None = None
    for index, relays in enumerate(config.hops):
        progress(f"{relays} relays: plain", index / len(config.hops))
        baseline, plain_cpu = await _baseline(root / f"plain-{index}", relays, config)
        progress(f"{relays} relays: overlay", (index + 0.5) / len(config.hops))
        overlay, overlay_cpu = await _overlay(root / f"overlay-{index}", relays, config)
        if relays == 0:
            direct = (overlay, baseline)
        results.append(bench.hop_result(relays, overlay, baseline, direct,
                                        (overlay_cpu, plain_cpu) if relays else None))
    shakes = await _handshakes(root / "handshakes", config.handshakes, progress)
    progress("done", 1.0)
    return bench.report(config, "processes", results, shakes)


async def run(config: TransportConfig, progress: Progress) -> bench.TransportReport:
    """The whole run within the time limit; no child outlives it."""
    root = Path(tempfile.mkdtemp(prefix="overlay-bench-transport-"))
    try:
        for name in [f"{side}-{i}" for side in ("plain", "overlay")
                     for i in range(len(config.hops))] + ["handshakes"]:
            (root / name).mkdir()
        result: bench.TransportReport = await bench.bounded(_run(root, config, progress),
                                                            config.time_limit)
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)
