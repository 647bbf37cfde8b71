"""``overlay bench directory``'s machinery: the processes, the CPU meter, setup and phases.

The servers and the client workers run as child processes of this one
(:class:`~overlay.bench.children.Children` stops them, whatever happens);
the baseline's password hashes run on threads here.  What is measured, and
why, is in :mod:`overlay.bench.directory`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio

from overlay.addresses import Address, format_address, parse_address
from overlay.bench.children import Children
from overlay.bench.directory_report import (
    BenchConfig,
    CpuUse,
    DirectoryBenchError,
    HashSample,
    Phase,
    Setup,
)
from overlay.bench.directory_worker import LineReader, encode_line
from overlay.bench.progress import Progress
from overlay.directory.server.passwords import HashCost, hash_password, password_matches
from overlay.state import KEY_FILE
from overlay.stats import quantile

T = TypeVar("T")

PASSWORD = "correct horse battery staple"
SERVER_START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
START_DELAY = 0.3
"""Seconds between sending a phase to the workers and its start, so that all start together."""
GRACE = 10.0
"""How long a phase waits, after its window, for operations still in flight."""
TICK = 0.25
SERVER_LINE = re.compile(r"listening on (\S+) key ([0-9a-f]{64})")


# --- who used the CPU ----------------------------------------------------------------


@dataclass(frozen=True)
class _Ticks:
    total: int
    idle: int
    by_pid: dict[int, int]
    database: dict[int, int] | None
    """Ticks of each database backend serving the servers, when they are processes here."""


class CpuMeter:
    """Samples /proc/stat and /proc/PID/stat; on other systems every sample is None.

    ``database`` lists the backends of a PostgreSQL database on this machine; it is
    asked again at every sample, since a server's pool opens connections as it needs
    them (a backend that started within a window is charged from zero)."""

    def __init__(self, servers: list[int], clients: list[int],
                 database: Callable[[], list[int]] | None = None) -> None:
        self.servers = servers
        self.clients = clients
        self.database = database
        self.cores = os.cpu_count() or 1

    def sample(self) -> _Ticks | None:
        backends = None if self.database is None else self.database()  # before the clock
        try:
            with open("/proc/stat") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
            by_pid = {pid: _process_ticks(pid)
                      for pid in (*self.servers, *self.clients, os.getpid())}
        except (OSError, ValueError, IndexError):
            return None
        database = None
        if backends is not None:
            database = {}
            for pid in backends:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    database[pid] = _process_ticks(pid)  # one may have exited meanwhile
        # user nice system idle iowait irq softirq steal [guest guest_nice: inside user]
        return _Ticks(sum(fields[:8]), fields[3] + fields[4], by_pid, database)

    def between(self, a: _Ticks | None, b: _Ticks | None) -> CpuUse | None:
        if a is None or b is None or b.total <= a.total:
            return None
        scale = self.cores / (b.total - a.total)

        def cores(*pids: int) -> float:
            return sum(b.by_pid[pid] - a.by_pid[pid] for pid in pids) * scale

        busy = (b.total - a.total - (b.idle - a.idle)) * scale
        servers = [cores(pid) for pid in self.servers]
        server, clients, bench = sum(servers), cores(*self.clients), cores(os.getpid())
        database = None
        if a.database is not None and b.database is not None:
            database = sum(ticks - a.database.get(pid, 0)
                           for pid, ticks in b.database.items()) * scale
        other = busy - server - clients - bench - (database or 0.0)
        return CpuUse(round(server, 2), clients=round(clients, 2), bench=round(bench, 2),
                      database=None if database is None else round(database, 2),
                      other=round(max(0.0, other), 2), idle=round((b.idle - a.idle) * scale, 2),
                      servers=[round(x, 2) for x in servers])


def _process_ticks(pid: int) -> int:
    """utime + stime of every thread of ``pid`` (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        after_name = stat.read().rpartition(")")[2].split()
    return int(after_name[11]) + int(after_name[12])


# --- child processes -----------------------------------------------------------------


@dataclass(frozen=True)
class ServerProcess:
    address: Address
    key: bytes
    pid: int


@contextlib.asynccontextmanager
async def servers(root: Path, clients: int, db: str,
                  count: int = 1) -> AsyncIterator[list[ServerProcess]]:
    """``count`` ``overlay server`` processes on 127.0.0.1, free ports, one database and
    one new key, as docs/directory.md has operators run them: the first makes the key,
    the others get a copy in state directories of their own.  (Every client registers
    from 127.0.0.1: the registration limit must let them.)"""
    async with Children(grace=STOP_TIMEOUT) as children:
        started: list[ServerProcess] = []
        for index in range(count):
            state = root / f"state{index}"
            if index:
                state.mkdir(mode=0o700)
                shutil.copy2(root / "state0" / KEY_FILE, state / KEY_FILE)
            command = [sys.executable, "-m", "overlay", "server", "-qq",
                       "--listen", "127.0.0.1:0", "--state", str(state), "--db", db,
                       "--registrations-per-hour", str(max(1, clients))]
            process = await children.start(command, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE)
            started.append(await _listening(process, index, count))
        if len({server.key for server in started}) != 1:
            raise DirectoryBenchError("the servers did not all load the same key")
        yield started


async def _listening(process: trio.Process, index: int, count: int) -> ServerProcess:
    """The address and key the server prints once it listens."""
    assert process.stdout is not None
    line = None
    with trio.move_on_after(SERVER_START_TIMEOUT):
        line = await LineReader(process.stdout).readline()
    found = SERVER_LINE.search(line.decode(errors="replace")) if line else None
    if found is None:
        why = (f"it exited with status {process.returncode}" if process.poll() is not None
               else f"no 'listening' line within {SERVER_START_TIMEOUT:g} s")
        which = "the directory server" if count == 1 else f"directory server {index + 1}"
        raise DirectoryBenchError(f"{which} did not start: {why}")
    return ServerProcess(parse_address(found[1]), bytes.fromhex(found[2]), process.pid)


class Worker:
    """One client process and its pipe: a command out, progress lines, one result back."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._reader = LineReader(process.stdout)

    async def command(self, command: dict[str, Any],
                      on_progress: Callable[[int], None]) -> dict[str, Any]:
        await self._stdin.send_all(encode_line(command))
        while (line := await self._reader.readline()) is not None:
            message: dict[str, Any] = json.loads(line)
            if message.get("type") == "progress":
                on_progress(int(message.get("done", 1)))
            else:
                return message
        raise DirectoryBenchError(
            f"a client process exited during {command.get('name', command['cmd'])!r} "
            f"(status {self.process.poll()})")


@contextlib.asynccontextmanager
async def workers(count: int) -> AsyncIterator[list[Worker]]:
    """``count`` client processes, each stopped by the end of its stdin on the way out."""
    async with Children(grace=STOP_TIMEOUT) as children:
        started = []
        for _ in range(count):
            process = await children.start(
                [sys.executable, "-m", "overlay.bench.directory_worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            started.append(Worker(process))
        yield started


async def _all(workers: list[Worker], commands: list[dict[str, Any]],
               on_progress: Callable[[int], None]) -> list[dict[str, Any]]:
    """The same kind of command to every worker at once; their results in worker order."""
    results: list[dict[str, Any]] = [{} for _ in workers]

    async def one(index: int) -> None:
        results[index] = await workers[index].command(commands[index], on_progress)

    async with trio.open_nursery() as nursery:
        for index in range(len(workers)):
            nursery.start_soon(one, index)
    return results


async def _bounded(work: Awaitable[T], seconds: float, what: str) -> T:
    """``work``, or DirectoryBenchError (one clear line, not a trace) after ``seconds``."""
    try:
        with trio.fail_after(seconds):
            return await work
    except trio.TooSlowError:
        raise DirectoryBenchError(f"{what} did not finish within {seconds:g} s") from None


@contextlib.asynccontextmanager
async def _ticking(progress: Progress, label: str, seconds: float) -> AsyncIterator[None]:
    """Progress by the clock, for steps whose length is known but which report nothing."""
    async with trio.open_nursery() as nursery:
        async def tick() -> None:
            began = trio.current_time()
            while True:
                progress(label, min(1.0, (trio.current_time() - began) / seconds))
                await trio.sleep(TICK)

        nursery.start_soon(tick)
        yield
        nursery.cancel_scope.cancel()


# --- setup -----------------------------------------------------------------------------


async def setup(workers: list[Worker], config: BenchConfig, servers: list[ServerProcess],
                progress: Progress) -> Setup:
    """Every user connects (to the server :func:`server_of` it), registers, logs in and
    becomes a contact of its neighbours on the ring, each step all users at once."""
    began = time.perf_counter()
    procs = len(workers)
    connect = [{"cmd": "connect",
                "addresses": [format_address(server.address) for server in servers],
                "server_key": servers[0].key.hex(), "password": PASSWORD,
                "users": list(range(index, config.clients, procs)),
                "servers": [server_of(user, procs, len(servers))
                            for user in range(index, config.clients, procs)],
                "clients": config.clients,
                "contacts_each": config.contacts_each} for index in range(procs)]
    # Bounded: generous for this machine's hash rate, but a hung server still ends the run.
    time_limit = 30.0 + config.clients / 10
    steps = [("connect", "connecting", connect)] + [
        (name, label, [{"cmd": "step", "name": name, "time_limit": time_limit}] * procs)
        for name, label in (("register", "registering"), ("login", "logging in"),
                            ("ask", "asking contacts"), ("accept", "accepting"))]
    for name, label, commands in steps:
        done = 0
        progress(f"setup: {label}", 0.0)

        def advance(count: int, label: str = label) -> None:
            nonlocal done
            done += count
            progress(f"setup: {label}", done / config.clients)

        results = await _bounded(_all(workers, commands, advance),
                                 time_limit + STOP_TIMEOUT, f"setup step {name!r}")
        failed = sum(sum(r.get("errors", {}).values()) for r in results)
        if failed:
            first = next((r["first_error"] for r in results if r.get("first_error")), "?")
            raise DirectoryBenchError(f"setup step {name!r} failed for {failed} of "
                                      f"{config.clients} users; first: {first}")
    pairs = config.clients * config.contacts_per_user // 2
    return Setup(config.clients, pairs, round(time.perf_counter() - began, 2))


def server_of(user: int, procs: int, servers: int) -> int:
    """The server user ``user`` is a client of.  Worker ``w`` holds users ``w``, ``w +
    procs``...; counting those in turn round the servers spreads every worker's users
    evenly over all of them (``user % servers`` would put all of a worker's users on one
    server whenever procs and servers share a factor)."""
    return (user // procs) % servers


# --- the baseline: the bare password hash --------------------------------------------


async def hash_rate(threads: int, seconds: float, meter: CpuMeter, label: str,
                    progress: Progress) -> HashSample:
    """``password_matches`` back to back on ``threads`` threads, as the server runs it."""
    encoded = await trio.to_thread.run_sync(hash_password, PASSWORD, HashCost.owasp())
    first = meter.sample()
    start = time.perf_counter()
    deadline = start + seconds
    finished: list[tuple[int, float]] = []

    def spin() -> tuple[int, float]:
        count = 0
        while time.perf_counter() < deadline:
            if not password_matches(encoded, PASSWORD):
                raise DirectoryBenchError("the baseline's own password did not verify")
            count += 1
        return count, time.perf_counter()

    async def thread() -> None:
        finished.append(await trio.to_thread.run_sync(spin))

    async with _ticking(progress, label, seconds), trio.open_nursery() as nursery:
        for _ in range(threads):
            nursery.start_soon(thread)
    cpu = meter.between(first, meter.sample())
    hashes = sum(count for count, _ in finished)
    elapsed = max(end for _, end in finished) - start
    return HashSample(hashes, round(elapsed, 3), round(hashes / elapsed, 2),
                      round(elapsed * threads / hashes * 1000, 2) if hashes else 0.0, cpu)


# --- the measured phases -------------------------------------------------------------


async def phase(workers: list[Worker], name: str, config: BenchConfig, meter: CpuMeter,
                progress: Progress) -> Phase:
    per_client = max(1, math.ceil(config.max_ops / config.clients))
    start_at = time.time() + START_DELAY
    rate = None if name == "logins" else config.rate
    command = {"cmd": "phase", "name": name, "start_at": start_at,
               "duration": config.duration, "max_ops": per_client, "grace": GRACE,
               "rate": None if rate is None else rate / config.clients}
    samples: list[_Ticks | None] = []

    async def measure_window() -> None:
        await trio.sleep(max(0.0, start_at - time.time()))
        samples.append(meter.sample())
        await trio.sleep(config.duration)
        samples.append(meter.sample())

    async with _ticking(progress, name, START_DELAY + config.duration), \
            trio.open_nursery() as nursery:
        nursery.start_soon(measure_window)
        # The workers bound themselves; this only catches one that stopped answering.
        results = await _bounded(_all(workers, [command] * len(workers), lambda _: None),
                                 START_DELAY + config.duration + GRACE + STOP_TIMEOUT,
                                 f"the {name} phase")
    cpu = meter.between(samples[0], samples[1]) if len(samples) == 2 else None
    return _aggregate(name, rate, results, cpu)


def _aggregate(name: str, rate: float | None, results: list[dict[str, Any]],
               cpu: CpuUse | None) -> Phase:
    latencies = sorted(us for r in results for us in r["latencies_us"])
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    ops = sum(int(r["ok"]) for r in results)
    seconds = max(float(r["elapsed"]) for r in results)
    notices = sum(int(r["notices"]) for r in results)
    by_server = [sum(column) for column in zip(*(r["ok_by_server"] for r in results),
                                                strict=True)]
    p50 = p99 = None
    if latencies:
        p50 = round((quantile(latencies, 0.5) or 0.0) / 1000, 3)
        p99 = round((quantile(latencies, 0.99) or 0.0) / 1000, 3)
    return Phase(
        name=name, offered_s=rate, ops=ops, seconds=round(seconds, 3),
        ops_s=round(ops / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=p50, p99_ms=p99, errors=sum(errors.values()),
        errors_by_kind=dict(sorted(errors.items())),
        first_error=next((r["first_error"] for r in results if r.get("first_error")), None),
        late=sum(int(r["late"]) for r in results),
        notices=notices, notices_s=round(notices / seconds, 1) if seconds > 0 else 0.0,
        ops_by_server=by_server, cpu=cpu,
        server_us_per_op=None if cpu is None else _per_op(cpu.server, seconds, ops),
        clients_us_per_op=None if cpu is None else _per_op(cpu.clients, seconds, ops),
        database_us_per_op=None if cpu is None or cpu.database is None
        else _per_op(cpu.database, seconds, ops),
    )


def _per_op(cores: float, seconds: float, ops: int) -> float | None:
    """Microseconds of CPU per operation, from cores kept busy over the window."""
    return round(cores * seconds / ops * 1e6, 1) if ops else None
