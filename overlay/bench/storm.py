"""``overlay bench storm``: N clients log in again at once after a directory restart.

Skype's 2007 outage began with a flood of re-logins after a mass reboot.  This
reproduces its shape on 127.0.0.1: a real ``overlay server`` process, N
accounts registered, the server killed (SIGKILL) and started again on the same
port and database while all N clients are already trying to log in with their
passwords (Argon2id, the expensive part).  The clients do what roles do
(:class:`~overlay.directory.client.servers.Retry`): refused connections back off
exponentially with jitter, a 429 waits its ``retry_after`` stretched by up to
half.  A prober asks for the supernode list (no session, no hash) every 0.2 s
throughout, to show whether the server keeps answering.

Figures: seconds from the restart until 99% and 100% of the clients are logged
in, the 429s they were sent, the server's peak login queue and the slowest
health answer.  Bounded: N clients, one deadline for the whole storm, and the
server process never outlives the run (:mod:`overlay.bench.children`).
"""

from __future__ import annotations

import math
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import trio

from overlay.addresses import Address, parse_address
from overlay.bench.children import Children, stop_child
from overlay.bench.directory_worker import LineReader
from overlay.bench.progress import Progress
from overlay.directory.client.connection import DirectoryClient
from overlay.directory.client.servers import Retry, is_busy
from overlay.errors import DirectoryError, OverlayError
from overlay.ids import SEED_LEN, Identity

PASSWORD = "storm password 1234"
PROBE_INTERVAL = 0.2
STOP_GRACE = 30.0
"""Seconds the server has to stop in order (and log its queue stats) before SIGKILL."""


@dataclass(frozen=True, slots=True)
class StormConfig:
    clients: int = 1000
    timeout: float = 300.0
    """The whole storm's bound: a client not back by then has given up (reported)."""
    max_login_queue: int | None = None
    db: str | None = None


@dataclass
class StormReport:
    clients: int
    cores: int
    register_seconds: float
    p99_seconds: float | None
    all_seconds: float | None
    back: int
    gave_up: int
    busy_429: int
    refused_connects: int
    peak_queue: int | None
    shed_by_server: int | None
    probes: int
    probe_connect_failures: int
    probe_failures: int
    probe_max_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class StormBenchError(OverlayError):
    """The storm could not run: the server did not start."""


class _Server:
    """``overlay server`` in a child process; its stderr kept for the final stats line."""

    def __init__(self, children: Children, state: Path, listen: str,
                 config: StormConfig) -> None:
        self._children = children
        self._args = [sys.executable, "-m", "overlay", "server", "--state", str(state),
                      "--listen", listen, "--registrations-per-hour", str(10 * config.clients),
                      "-v"]
        if config.db is not None:
            self._args += ["--db", config.db]
        if config.max_login_queue is not None:
            self._args += ["--max-login-queue", str(config.max_login_queue)]
        self.stderr_path = state.with_suffix(".log")
        self._stderr: IO[str] | None = None
        self._proc: trio.Process | None = None

    async def start(self) -> None:
        self._stderr = self.stderr_path.open("a")
        self._proc = await self._children.start(self._args, ask=signal.SIGINT,
                                                stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=self._stderr)

    async def ready(self) -> tuple[Address, bytes]:
        assert self._proc is not None and self._proc.stdout is not None
        raw = await LineReader(self._proc.stdout).readline()
        line = (raw or b"").decode(errors="replace").split()
        # "directory server listening on A key K"
        if len(line) < 7:
            raise StormBenchError(f"the server did not start: {self.stderr_path.read_text()}")
        return parse_address(line[4]), bytes.fromhex(line[6])

    async def stop(self, ask: signal.Signals = signal.SIGINT) -> None:
        """``ask`` it to stop (SIGINT: orderly, it logs its queue stats; SIGKILL: a crash)."""
        if self._proc is not None:
            await stop_child(self._proc, ask=ask, grace=STOP_GRACE)
        if self._stderr is not None:
            self._stderr.close()

    def queue_stats(self) -> tuple[int | None, int | None]:
        for line in self.stderr_path.read_text().splitlines()[::-1]:
            if "login queue: peak" in line:
                words = line.split("login queue: peak ", 1)[1].replace(",", "").split()
                return int(words[0]), int(words[1])
        return None, None


@dataclass
class _Counts:
    busy: int = 0
    refused: int = 0


async def _log_in(address: Address, key: bytes, identity: Identity, name: str, *,
                  register: bool, counts: _Counts, rng: random.Random,
                  logged_in: Callable[[], None] | None = None,
                  hold: trio.Event | None = None) -> None:
    """Log in (or register) until it works, the way a role does; then hold the link
    until ``hold`` (a client that is back stays connected)."""
    retry = Retry(0.5, 30.0, rng)
    while True:
        try:
            async with DirectoryClient.connect(address, identity, server_key=key,
                                               connect_timeout=10.0) as client:
                if register:
                    await client.register(name, PASSWORD)
                else:
                    await client.login(name, PASSWORD)
                if logged_in is not None:
                    logged_in()
                if hold is not None:
                    await hold.wait()
                return
        except DirectoryError as exc:
            if is_busy(exc):
                counts.busy += 1
                await trio.sleep(retry.busy(exc.retry_after))
            else:
                counts.refused += 1
                await trio.sleep(retry.round_failed())


async def _probe(address: Address, key: bytes, latencies: list[float],
                 failures: list[int]) -> None:
    """Ask for the supernode list every PROBE_INTERVAL on one connection: ``failures[0]``
    counts connections that could not be opened (the handshake is admitted like any
    other client's), ``failures[1]`` requests not answered within 5 s or links lost."""
    identity = Identity.from_seed(secrets.token_bytes(SEED_LEN))
    while True:
        connected = False
        try:
            async with DirectoryClient.connect(address, identity, server_key=key) as client:
                connected = True
                while True:
                    start = time.perf_counter()
                    with trio.fail_after(5):
                        await client.supernodes()
                    latencies.append(time.perf_counter() - start)
                    await trio.sleep(PROBE_INTERVAL)
        except (DirectoryError, trio.TooSlowError):
            failures[1 if connected else 0] += 1
            await trio.sleep(PROBE_INTERVAL)


async def run(config: StormConfig, progress: Progress) -> StormReport:
    """Register, crash the server, restart it into the storm; no server outlives the run."""
    with tempfile.TemporaryDirectory(prefix="ovstorm") as root:
        async with Children(grace=STOP_GRACE) as children:
            return await _storm(children, Path(root) / "server", config, progress)


async def _storm(children: Children, state: Path, config: StormConfig,
                 progress: Progress) -> StormReport:
    rng = random.Random(1)
    identities = [Identity.from_seed(secrets.token_bytes(SEED_LEN)) for _ in range(config.clients)]
    names = [f"storm{i}" for i in range(config.clients)]
    progress("registering", 0.0)
    server = _Server(children, state, "127.0.0.1:0", config)
    await server.start()
    address, key = await server.ready()
    counts = _Counts()
    start = time.perf_counter()
    try:
        with trio.fail_after(config.timeout):
            async with trio.open_nursery() as nursery:
                for identity, name in zip(identities, names, strict=True):
                    nursery.start_soon(partial(_log_in, address, key, identity, name,
                                               register=True, counts=counts, rng=rng))
    finally:
        await server.stop(signal.SIGKILL)  # the "mass reboot": no goodbye
    register_seconds = time.perf_counter() - start

    progress("storm", 0.0)
    counts = _Counts()
    back: list[float] = []
    latencies: list[float] = []
    failures = [0, 0]
    hold, done = trio.Event(), trio.Event()
    restarted = time.perf_counter()
    server = _Server(children, state, f"127.0.0.1:{address[1]}", config)

    def logged_in() -> None:
        back.append(time.perf_counter() - restarted)
        progress("storm", len(back) / config.clients)
        if len(back) == config.clients:
            done.set()

    try:
        await server.start()
        async with trio.open_nursery() as nursery:
            for identity, name in zip(identities, names, strict=True):
                nursery.start_soon(partial(_log_in, address, key, identity, name,
                                           register=False, counts=counts, rng=rng,
                                           logged_in=logged_in, hold=hold))
            await server.ready()
            nursery.start_soon(_probe, address, key, latencies, failures)
            with trio.move_on_after(config.timeout):
                await done.wait()
            hold.set()
            nursery.cancel_scope.cancel()
    finally:
        await server.stop(signal.SIGINT)
    peak, shed = server.queue_stats()
    back.sort()
    p99 = back[math.ceil(0.99 * config.clients) - 1] if len(back) >= math.ceil(
        0.99 * config.clients) else None
    return StormReport(
        clients=config.clients, cores=os.cpu_count() or 1,
        register_seconds=round(register_seconds, 2),
        p99_seconds=None if p99 is None else round(p99, 2),
        all_seconds=round(back[-1], 2) if len(back) == config.clients else None,
        back=len(back), gave_up=config.clients - len(back), busy_429=counts.busy,
        refused_connects=counts.refused, peak_queue=peak, shed_by_server=shed,
        probes=len(latencies), probe_connect_failures=failures[0],
        probe_failures=failures[1],
        probe_max_ms=round(1000 * max(latencies, default=0.0), 1))
