"""``overlay bench directory``: what the bench is asked (its config) and what it reports.

The figures (:class:`DirectoryReport` and its parts), the issue's targets and
the notes a reader needs to trust them; the theory of the run is in
:mod:`overlay.bench.directory`, the run's machinery in
:mod:`overlay.bench.directory_phases`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from overlay.errors import OverlayError

KEPT_UP = 0.98
"""At a paced --rate, a phase kept up if it completed this share of the offered load."""


class DirectoryBenchError(OverlayError):
    """The benchmark could not run (the server did not start, setup failed)."""


def default_client_procs() -> int:
    """One client process per core: the clients need about as much CPU as the server."""
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class BenchConfig:
    clients: int = 100
    duration: float = 5.0
    """Seconds per measured phase."""
    client_procs: int = field(default_factory=default_client_procs)
    contacts_each: int = 2
    """Each user asks the next this many on a ring: 2 x this contacts per user."""
    hash_seconds: float = 3.0
    max_ops: int = 1_000_000
    """Per phase, across all clients: bounds memory whatever the machine's speed."""
    rate: float | None = None
    """Lookups and presence updates offered per second, all clients together, on a fixed
    schedule; None for closed loops.  Logins always run closed: their figure is a rate
    at saturation, set against the hash rate."""
    db: str | None = None
    """A SQLite file to create, or a PostgreSQL URL (the run uses a fresh schema in it);
    None: a new SQLite file in a temporary directory."""
    servers: int = 1
    """Server processes on the one database (more than one only on PostgreSQL)."""

    @property
    def contacts_per_user(self) -> int:
        return 2 * min(self.contacts_each, (self.clients - 1) // 2)


@dataclass(frozen=True)
class CpuUse:
    """Cores kept busy on average over a window, by whom (so 1.0 is one core all the time)."""

    server: float
    clients: float
    bench: float
    """This process: the hash baseline runs here; during phases it only waits."""
    database: float | None
    """The PostgreSQL backends serving the servers' connections, if they run on this
    machine; None for SQLite (inside the server's figure) or a database elsewhere."""
    other: float
    """Everything else on the machine: other people's work on a shared one (and
    PostgreSQL's shared background processes)."""
    idle: float
    servers: list[float]
    """Each server process's share of ``server``, in the order of the report's servers."""


@dataclass(frozen=True)
class HashSample:
    hashes: int
    seconds: float
    hashes_s: float
    ms_per_hash: float
    """Mean wall time of one verification on one thread, while all threads ran."""
    cpu: CpuUse | None


@dataclass(frozen=True)
class HashRate:
    threads: int
    before: HashSample
    """Measured just before the login phase."""
    after: HashSample
    """Measured just after it."""
    hashes_s: float
    """The faster of the two: the baseline for logins/s (noise only ever slows hashing)."""


@dataclass(frozen=True)
class Phase:
    name: str
    offered_s: float | None
    """The paced load (--rate), or None for a closed loop (every client back to back)."""
    ops: int
    seconds: float
    ops_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    errors_by_kind: dict[str, int]
    first_error: str | None
    late: int
    """Operations that completed after the window closed: in the latencies, not in ops/s."""
    notices: int
    """Notices the clients received during the phase (presence sent to contacts)."""
    notices_s: float
    ops_by_server: list[int]
    """Completed operations answered by each server process, in the report's order."""
    cpu: CpuUse | None
    server_us_per_op: float | None
    """Server CPU time per completed operation (all its threads): what an operation costs
    the server, whoever else shares the machine; summed over the server processes."""
    clients_us_per_op: float | None
    database_us_per_op: float | None
    """The PostgreSQL backends' CPU per operation (see CpuUse.database)."""


@dataclass(frozen=True)
class Setup:
    users: int
    contact_pairs: int
    seconds: float


@dataclass(frozen=True)
class Target:
    figure: str
    limit: float
    kind: str
    """'min' (at least) or 'max' (below)."""
    measured: float | None
    met: bool


@dataclass(frozen=True)
class DirectoryReport:
    clients: int
    client_procs: int
    cores: int
    contacts_per_user: int
    duration_s: float
    engine: str
    """'sqlite' or 'postgresql'."""
    database: str
    """The SQLite file's name, or the URL without its password and the run's schema."""
    servers: list[str]
    """The server processes' addresses; user i is a client of server (i // P) mod N
    (P worker processes: :func:`~overlay.bench.directory_phases.server_of`)."""
    setup: Setup
    hash: HashRate
    logins: Phase
    lookups: Phase
    presence: Phase
    login_hash_ratio: float
    targets: list[Target]
    notes: list[str]
    """What a reader must know to trust the figures: a busy machine, a drifting baseline."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def targets(logins_ratio: float, lookups: Phase, presence: Phase) -> list[Target]:
    """The issue's targets, stated for 100 clients on 2 cores: reported, never asserted."""
    def at_least(figure: str, limit: float, measured: float | None) -> Target:
        return Target(figure, limit, "min", measured, measured is not None and measured >= limit)

    def below(figure: str, limit: float, measured: float | None) -> Target:
        return Target(figure, limit, "max", measured, measured is not None and measured < limit)

    def throughput(figure: str, limit: float, phase: Phase) -> Target:
        if phase.offered_s is None:
            return at_least(figure, limit, phase.ops_s)
        # Paced: the rate cannot exceed what was offered, and the operations still in
        # flight when the window closes are not counted; keeping up is what counts.
        kept_up = phase.offered_s >= limit and phase.ops_s >= KEPT_UP * phase.offered_s
        return Target(figure, limit, "min", phase.ops_s, kept_up)

    return [
        at_least("login_hash_ratio", 0.8, logins_ratio),
        throughput("lookups_s", 5000, lookups),
        below("lookups_p99_ms", 20, lookups.p99_ms),
        throughput("presence_s", 5000, presence),
        below("presence_p99_ms", 20, presence.p99_ms),
    ]


BUSY_ELSEWHERE = 0.25
"""Cores busy outside the benchmark above which a window's figures are flagged."""
BASELINE_DRIFT = 0.2
"""Relative gap between the two hash samples above which the run is flagged."""


def notes(config: BenchConfig, hashing: HashRate, phases: dict[str, Phase]) -> list[str]:
    """Warnings drawn from the run itself; a shared machine makes them common."""
    notes = []
    windows = [(name, phase.cpu) for name, phase in phases.items()]
    windows += [("hash before logins", hashing.before.cpu),
                ("hash after logins", hashing.after.cpu)]
    busy = [f"{name} {cpu.other:.2f}" for name, cpu in windows
            if cpu is not None and cpu.other > BUSY_ELSEWHERE]
    if busy:
        notes.append("other processes kept cores busy (" + ", ".join(busy) + "): those "
                     "windows' figures are low, and ratios between windows unreliable")
    low, high = sorted((hashing.before.hashes_s, hashing.after.hashes_s))
    if low and high / low - 1 > BASELINE_DRIFT:
        notes.append(f"the bare hash rate moved from {hashing.before.hashes_s:g}/s to "
                     f"{hashing.after.hashes_s:g}/s across the login phase: the machine's "
                     "speed changed during the run")
    if config.rate is None:
        notes.append(f"closed loops: by Little's law the mean latency is {config.clients} "
                     "clients / throughput, so latencies here are queueing at saturation; "
                     "--rate measures them at a given load")
    if config.clients != 100 or (os.cpu_count() or 1) != 2:
        notes.append("the targets are stated for 100 clients on 2 cores")
    return notes
