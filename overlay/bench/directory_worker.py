"""One client process of ``overlay bench directory``: many directory clients, driven over a pipe.

Why a separate process: every client request costs Python CPU time (encode,
frame, wake a task, decode), about as much as the server spends answering it,
so a single client process, held to one core by the GIL, could measure its
own limit instead of the server's.  The orchestrator
(:mod:`overlay.bench.directory`) starts one or more of these and sends each
the same commands; each worker owns the users whose index modulo the number
of workers is its own.  With several server addresses (server processes on
one database), each user connects to the one the orchestrator assigned it
(``servers``, parallel to ``users``) and stays there: an even spread, as a
load balancer or rotated ``--server`` lists would give real clients (which
use the first server that answers), and every worker talks to every server,
so a slow worker cannot skew one server's share.  Failing over is not what
this measures; the kill -9 tests do that.

The pipe protocol is one JSON object per line.  On stdin, commands::

    {"cmd": "connect", "addresses": ["127.0.0.1:7000", ...], "server_key": HEX,
     "users": [0, 2, ...], "servers": [0, 1, ...], "clients": 100, "contacts_each": 2,
     "password": "..."}
    {"cmd": "step", "name": "register" | "login" | "ask" | "accept", "time_limit": 60}
    {"cmd": "phase", "name": "logins" | "lookups" | "presence", "start_at": WALL,
     "duration": 5.0, "max_ops": 2000, "grace": 10.0, "rate": null | OPS_PER_S_PER_USER}

and on stdout, answers: ``{"type": "progress", "done": 1}`` while a step runs,
then one ``{"type": "result", ...}`` per command (counts, errors by status,
and for a phase the latency of every completed operation in microseconds).
End of stdin means stop: the worker closes its connections and exits, so it
never outlives an orchestrator that died.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from overlay.addresses import parse_address
from overlay.directory.client.connection import DirectoryClient
from overlay.errors import DirectoryError, DirectoryUnavailable, OverlayError
from overlay.ids import SEED_LEN, Identity

MAX_LINE = 64 * 1024 * 1024
RETRY_AFTER_CAP = 1.0
"""A 429's ``retry_after`` is honoured, but never for longer than this (seconds)."""


def username(index: int) -> str:
    """Fixed names: the database is fresh every run, so there is nothing to collide with."""
    return f"bench{index:05d}"


def ring_contacts(index: int, clients: int, each: int) -> tuple[list[int], list[int]]:
    """Whom user ``index`` asks (the next ``each`` on a ring) and who asks it (the previous).

    ``each`` is at most (clients - 1) // 2, so no pair asks each other twice and
    every user ends up with 2 x ``each`` accepted contacts.
    """
    each = min(each, (clients - 1) // 2)
    asks = [(index + k) % clients for k in range(1, each + 1)]
    asked_by = [(index - k) % clients for k in range(1, each + 1)]
    return asks, asked_by


class LineReader:
    """Newline-framed reads from a trio stream (pipes carry no message boundaries)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def readline(self) -> bytes | None:
        """The next line without its newline; None at end of stream."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
                return line
            if len(self._buffer) > MAX_LINE:
                raise OverlayError("benchmark pipe: line too long")
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._buffer += data


def encode_line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


@dataclass(slots=True)
class User:
    """One benchmark user: its own node key, one connection, its contacts on the ring."""

    index: int
    name: str
    identity: Identity
    server: int
    """Which of the addresses it is a client of."""
    asks: list[str]
    asked_by: list[str]
    client: DirectoryClient | None = None
    notices: int = 0

    @property
    def contacts(self) -> list[str]:
        return self.asks + self.asked_by


@dataclass(slots=True)
class Tally:
    """What one command did, across this worker's users."""

    ok: int = 0
    late: int = 0
    """Completed after the phase's window closed: timed, but not counted in the rate."""
    errors: Counter[str] = field(default_factory=Counter)
    latencies_us: list[int] = field(default_factory=list)
    in_flight: int = 0
    first_error: str | None = None
    by_server: list[int] = field(default_factory=list)
    """``ok`` split by the server that answered (phases only)."""

    def error(self, kind: str, text: str) -> None:
        self.errors[kind] += 1
        if self.first_error is None:
            self.first_error = text

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "late": self.late, "errors": dict(self.errors),
                "first_error": self.first_error, "latencies_us": self.latencies_us,
                "ok_by_server": self.by_server}


Operation = Callable[[User, int], Awaitable[object]]


class Worker:
    """This process's users and what they do on command; answers go out on ``out``."""

    def __init__(self, out: trio.abc.SendStream) -> None:
        self._out = out
        self._out_lock = trio.Lock()
        self.users: list[User] = []
        self.password = ""
        self.clients = 1
        self.servers = 1

    async def send(self, message: dict[str, Any]) -> None:
        async with self._out_lock:
            await self._out.send_all(encode_line(message))

    # --- connect -------------------------------------------------------------------------

    async def connect(self, nursery: trio.Nursery, command: dict[str, Any]) -> dict[str, Any]:
        """Open one connection per user; each is held by a task that also counts notices."""
        addresses = [parse_address(text) for text in command["addresses"]]
        self.servers = len(addresses)
        server_key = bytes.fromhex(command["server_key"])
        clients = self.clients = int(command["clients"])
        self.password = str(command["password"])
        tally = Tally()
        assigned = command.get("servers") or [0] * len(command["users"])
        for index, server in zip(command["users"], assigned, strict=True):
            asks, asked_by = ring_contacts(index, clients, int(command["contacts_each"]))
            user = User(index, username(index), Identity.from_seed(secrets.token_bytes(SEED_LEN)),
                        int(server), [username(i) for i in asks],
                        [username(i) for i in asked_by])
            try:
                await nursery.start(self._hold, user, addresses[user.server], server_key)
            except OverlayError as exc:
                tally.error("unavailable", f"{user.name}: {exc}")
                continue
            self.users.append(user)
            tally.ok += 1
        return {"type": "result", **tally.to_json()}

    async def _hold(self, user: User, address: tuple[str, int], server_key: bytes, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        try:
            async with DirectoryClient.connect(address, user.identity,
                                               server_key=server_key) as client:
                user.client = client
                started = True
                task_status.started()
                # Drained so that presence notices never pile up (the client would drop
                # them with a warning); counted, since delivering them is the server's work.
                async for _ in client.notices():
                    user.notices += 1
        except OverlayError:
            if not started:
                raise
            # A connection lost later shows up as errors of the operations that needed it.

    # --- setup steps: each user once -----------------------------------------------------

    async def step(self, name: str, time_limit: float) -> dict[str, Any]:
        """Every user does ``name`` once, all at once; bounded, so a hung server cannot stall."""
        actions: dict[str, Operation] = {
            "register": lambda u, i: _client(u).register(u.name, self.password),
            "login": lambda u, i: _client(u).login(u.name, self.password),
            "ask": lambda u, i: _each(u.asks, _client(u).contact_request),
            "accept": lambda u, i: _each(u.asked_by, _client(u).contact_accept),
        }
        action = actions[name]
        tally = Tally()

        async def one(user: User) -> None:
            # A 429 (the server's login queue is full: admission control) is waited
            # out and tried again, as every client does; the time limit bounds it.
            while True:
                attempt = Tally()
                ok = await _attempt(attempt, action, user, 0)
                if ok or set(attempt.errors) != {"429"}:
                    break
            if ok:
                tally.ok += 1
            else:
                tally.errors.update(attempt.errors)
                tally.first_error = tally.first_error or attempt.first_error
            await self.send({"type": "progress", "done": 1})

        with trio.move_on_after(time_limit) as scope:
            async with trio.open_nursery() as nursery:
                for user in self.users:
                    nursery.start_soon(one, user)
        if scope.cancelled_caught:
            tally.error("timeout", f"{name} not done within {time_limit:g} s")
        return {"type": "result", **tally.to_json()}

    # --- measured phases: closed loops or paced ------------------------------------------

    async def phase(self, name: str, *, start_at: float, duration: float, max_ops: int,
                    grace: float, rate: float | None) -> dict[str, Any]:
        """Every user runs ``name`` from ``start_at`` (wall clock) for ``duration`` seconds.

        With ``rate`` None, back to back (a closed loop: the server's throughput
        at saturation).  Otherwise each user starts one operation every
        1/``rate`` seconds on a fixed schedule (staggered across users), and
        latency is counted from the scheduled moment, so an operation that had
        to wait for its predecessor is charged for the wait: no coordinated
        omission.  The wall clock only lines the workers up; intervals are on
        perf_counter.  An operation in flight when the window closes is waited
        for (``grace`` seconds at most) and its latency kept, since dropping
        the slowest would flatter p99, but it does not count towards the rate.
        """
        operations: dict[str, Operation] = {
            "logins": lambda u, i: _client(u).login(u.name, self.password),
            "lookups": lambda u, i: _lookup(_client(u), u.contacts[i % len(u.contacts)]
                                            if u.contacts else u.name),
            "presence": lambda u, i: _client(u).set_presence(
                "online" if i % 2 == 0 else "away", home_address=("127.0.0.1", 20000 + u.index)),
        }
        operation = operations[name]
        await trio.sleep(max(0.0, start_at - time.time()))
        for user in self.users:
            user.notices = 0
        tally = Tally(by_server=[0] * self.servers)
        start = time.perf_counter()
        end = start + duration
        finished: list[float] = []

        async def loop(user: User) -> None:
            interval = None if rate is None else 1.0 / rate
            offset = 0.0 if interval is None else interval * user.index / self.clients
            count = 0
            while count < max_ops:
                if interval is None:
                    t0 = time.perf_counter()
                else:
                    t0 = start + offset + count * interval
                    await trio.sleep(max(0.0, t0 - time.perf_counter()))
                if t0 >= end:
                    break
                tally.in_flight += 1
                ok = await _attempt(tally, operation, user, count)
                tally.in_flight -= 1
                t1 = time.perf_counter()
                if ok:
                    tally.latencies_us.append(round((t1 - t0) * 1e6))
                    if t1 <= end:
                        tally.ok += 1
                        tally.by_server[user.server] += 1
                    else:
                        tally.late += 1
                elif ok is None:  # the connection is gone: this user is done
                    break
                count += 1
            finished.append(min(time.perf_counter(), end))

        with trio.move_on_at(trio.current_time() + duration + grace) as scope:
            async with trio.open_nursery() as nursery:
                for user in self.users:
                    nursery.start_soon(loop, user)
        if scope.cancelled_caught:
            for _ in range(tally.in_flight):
                tally.error("timeout", f"no answer within {grace:g} s after the window")
        elapsed = (max(finished) if finished else end) - start
        return {"type": "result", **tally.to_json(), "elapsed": elapsed,
                "notices": sum(user.notices for user in self.users)}


def _client(user: User) -> DirectoryClient:
    assert user.client is not None, "connect first"
    return user.client


async def _lookup(client: DirectoryClient, name: str) -> None:
    """A lookup without the client's Ed25519 check of the certificate.

    That check is the client's work, not the server's, and on one machine it
    would take CPU from the server being measured (it was 30% of a client
    process's time in a profile).  The answer is still checked for what only a
    correct lookup returns.
    """
    body = (await client.request("lookup", username=name)).body
    if not isinstance(body.get("certificate"), bytes) or "presence" not in body:
        raise DirectoryError(500, f"lookup of {name!r} answered without certificate or presence")


async def _each(names: list[str], call: Callable[[str], Awaitable[object]]) -> None:
    for name in names:
        await call(name)


async def _attempt(tally: Tally, operation: Operation, user: User, count: int) -> bool | None:
    """True if it succeeded, False on an error answer, None if the connection is gone."""
    try:
        await operation(user, count)
    except DirectoryError as exc:
        tally.error(str(exc.status), f"{user.name}: {exc}")
        if exc.status == 429:  # as a well-behaved client would: wait as told
            await trio.sleep(min(RETRY_AFTER_CAP, exc.retry_after or 0.1))
        return False
    except DirectoryUnavailable as exc:
        tally.error("unavailable", f"{user.name}: {exc}")
        return None
    except OverlayError as exc:  # e.g. a certificate that does not verify
        tally.error(type(exc).__name__, f"{user.name}: {exc}")
        return False
    return True


async def serve(stdin: trio.abc.ReceiveStream, stdout: trio.abc.SendStream) -> None:
    """Answer commands until end of input, then close every connection."""
    worker = Worker(stdout)
    reader = LineReader(stdin)
    async with trio.open_nursery() as connections:
        while (line := await reader.readline()) is not None:
            command = json.loads(line)
            cmd = command["cmd"]
            if cmd == "connect":
                answer = await worker.connect(connections, command)
            elif cmd == "step":
                answer = await worker.step(command["name"], float(command["time_limit"]))
            elif cmd == "phase":
                rate = command.get("rate")
                answer = await worker.phase(
                    command["name"], start_at=float(command["start_at"]),
                    duration=float(command["duration"]), max_ops=int(command["max_ops"]),
                    grace=float(command["grace"]), rate=None if rate is None else float(rate))
            else:
                answer = {"type": "result", "ok": 0, "errors": {"bad command": 1},
                          "first_error": f"unknown command {cmd!r}"}
            await worker.send(answer)
        connections.cancel_scope.cancel()


async def _main() -> None:
    # Duplicates: an FdStream closes its fd, and the interpreter still owns 0 and 1.
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    stdout = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    async with stdin, stdout:
        await serve(stdin, stdout)


def main() -> int:
    """Exit 0 at end of input; quietly 130 on Ctrl-C (the orchestrator reports it)."""
    try:
        trio.run(_main)
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            return 130
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

