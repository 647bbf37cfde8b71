"""``overlay bench directory``: a real directory server under concurrent clients, same run.

The server is ``overlay server`` in a child process with a fresh state
directory and database (removed afterwards), so it is measured as it runs in
production: its own interpreter, its own GIL, SQLite on the same disk.  With a
PostgreSQL URL the database is a fresh schema in it
(:mod:`overlay.bench.directory_db`), and ``servers`` processes may share it
and one key, as operators run them (docs/directory.md); the users are spread
evenly over them, and every figure of CPU is summed over them.  (The
same-run comparison of SQLite with PostgreSQL x1, x2 is
:mod:`overlay.bench.directory_compare`.)  The
clients run in ``client_procs`` worker processes
(:mod:`overlay.bench.directory_worker`), since one Python process can spend as
much CPU sending requests as the server spends answering them.

Setup (not timed as a figure): every user registers, logs in, asks the next
few users on a ring to be contacts and accepts the previous few, so that
lookups are authorised and presence updates reach logged-in contacts.  Then
three phases of ``duration`` seconds each (and at most ``max_ops``
operations), every client with one request outstanding at a time: logins
(correct passwords), lookups of the client's contacts in turn, and presence
updates.  By default each client goes back to back (a closed loop: the rate
at saturation); with ``rate``, lookups and presence updates are offered on a
fixed schedule instead (the latency at a given load).  Each phase reports
operations/s, p50/p99 latency and errors by status.

The baseline for logins is the bare password-hash rate: Argon2id
``password_matches`` at the server's cost, on as many threads of one process
as the server uses (one per core), measured in this process while the server
sits idle, once just before the login phase and once just after it.  On a
shared machine the rate drifts by tens of per cent within a minute, mostly
down when someone else is busy, so the faster sample is the machine's hashing
capacity, and noise can make the ratio look worse but never better.  A login
cannot be faster than one verification, so logins/s divided by that rate is
the share of the hashing capacity the server turns into logins.  Lookups and
presence need no hashing; their rates are set against the issue's absolute
targets.

On Linux every window (each phase, each hash sample) also records how many
cores the server, the client processes, this process and everything else on
the machine kept busy, from ``/proc``: it tells a saturated server from
starved clients, and a quiet machine from a noisy one.

This module is the run, start to end.  Its config and the report's figures,
targets and notes are :mod:`overlay.bench.directory_report`; the server and
client processes, the CPU meter, setup, the hash baseline and the phases are
:mod:`overlay.bench.directory_phases`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from overlay.addresses import format_address
from overlay.bench import directory_db
from overlay.bench import directory_phases as machinery
from overlay.bench.directory_report import (
    BenchConfig,
    CpuUse,
    DirectoryBenchError,
    DirectoryReport,
    HashRate,
    HashSample,
    Phase,
    Setup,
    Target,
    default_client_procs,
    notes,
    targets,
)
from overlay.bench.progress import Progress
from overlay.directory.server.service import DirectoryConfig

__all__ = ["BenchConfig", "CpuUse", "DirectoryBenchError", "DirectoryReport", "HashRate",
           "HashSample", "Phase", "Setup", "Target", "default_client_procs", "run"]

PHASES = ("logins", "lookups", "presence")


async def run(config: BenchConfig, progress: Progress) -> DirectoryReport:
    """The whole benchmark; the server and client processes never outlive it, nor does
    its database (the SQLite file, or the PostgreSQL schema)."""
    if config.clients < 1 or config.client_procs < 1 or config.servers < 1:
        raise DirectoryBenchError("need at least one client, client process and server")
    if config.servers > 1 and not directory_db.is_postgres(config.db):
        raise DirectoryBenchError(f"--servers {config.servers} needs a PostgreSQL database "
                                  "(--db postgresql://...): a SQLite file is one process's")
    procs = min(config.client_procs, config.clients)
    hash_threads = DirectoryConfig().hash_threads
    root = Path(tempfile.mkdtemp(prefix="overlay-bench-directory-"))
    try:
        progress("starting server" if config.servers == 1 else "starting servers", 0.0)
        async with directory_db.database(root, config.db) as db, \
                machinery.servers(root, config.clients, db.arg, config.servers) as servers, \
                machinery.workers(procs) as workers:
            meter = machinery.CpuMeter([s.pid for s in servers],
                                       [worker.process.pid for worker in workers], db.backends)
            setup = await machinery.setup(workers, config, servers, progress)
            phases: dict[str, Phase] = {}
            before = await machinery.hash_rate(hash_threads, config.hash_seconds, meter,
                                               "password hash", progress)
            phases["logins"] = await machinery.phase(workers, "logins", config, meter, progress)
            after = await machinery.hash_rate(hash_threads, config.hash_seconds, meter,
                                              "password hash again", progress)
            for name in PHASES[1:]:
                phases[name] = await machinery.phase(workers, name, config, meter, progress)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    progress("done", 1.0)
    hashing = HashRate(hash_threads, before, after, max(before.hashes_s, after.hashes_s))
    ratio = round(phases["logins"].ops_s / hashing.hashes_s, 4) if hashing.hashes_s else 0.0
    return DirectoryReport(
        clients=config.clients, client_procs=procs, cores=os.cpu_count() or 1,
        contacts_per_user=config.contacts_per_user, duration_s=config.duration,
        engine=db.engine, database=db.label,
        servers=[format_address(s.address) for s in servers], setup=setup, hash=hashing,
        logins=phases["logins"], lookups=phases["lookups"], presence=phases["presence"],
        login_hash_ratio=ratio,
        targets=targets(ratio, phases["lookups"], phases["presence"]),
        notes=notes(config, hashing, phases),
    )
