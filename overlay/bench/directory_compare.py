"""``overlay bench directory --compare``: SQLite with one server beside PostgreSQL with 1..N.

The directory issue's target is a same-run comparison: lookups/s and logins/s
with one and two server processes on PostgreSQL beside SQLite with one, and
the server CPU per request on each.  So this runs the whole bench
(:mod:`overlay.bench.directory`) once per configuration, back to back in one
invocation with the same clients, phases and machine, SQLite first, and sets
every throughput beside the SQLite run's as a ratio.  Each run keeps its own
bare-hash baseline, since the machine's speed drifts within minutes: logins
compare best as their share of that run's hash rate.

A shell loop over three invocations would give the same figures, but not one
table, nor one JSON document a reader can check the ratios in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from overlay.bench import directory, directory_db
from overlay.bench.directory_report import BenchConfig, DirectoryBenchError, DirectoryReport
from overlay.bench.progress import Progress

PHASES = ("logins", "lookups", "presence")


@dataclass(frozen=True)
class CompareConfig:
    bench: BenchConfig
    """``db`` is the PostgreSQL URL; ``servers`` the most server processes to run on it."""


@dataclass(frozen=True)
class Row:
    """One configuration's figures, and its throughputs over the baseline's (the first row)."""

    label: str
    engine: str
    servers: int
    ops_s: dict[str, float]
    ratio: dict[str, float | None]
    """ops/s over the baseline's, per phase."""
    login_hash_ratio: float
    server_us_per_op: dict[str, float | None]
    """Summed over this configuration's server processes."""
    database_us_per_op: dict[str, float | None]
    ops_by_server: dict[str, list[int]]
    other_cores_max: float | None
    """The most cores anything outside the bench kept busy in any of its phases."""


@dataclass(frozen=True)
class CompareReport:
    baseline: str
    rows: list[Row]
    runs: list[DirectoryReport]

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "rows": [asdict(row) for row in self.rows],
                "runs": [run.to_json() for run in self.runs]}


def configurations(config: BenchConfig) -> list[BenchConfig]:
    """SQLite x1 first (the baseline), then PostgreSQL x1 up to x ``servers`` (at least 2)."""
    if not directory_db.is_postgres(config.db):
        raise DirectoryBenchError("--compare needs --db postgresql://... (SQLite is the "
                                  "baseline it is compared with)")
    most = max(2, config.servers)
    return [dataclasses.replace(config, db=None, servers=1)] + [
        dataclasses.replace(config, servers=n) for n in range(1, most + 1)]


def label(report: DirectoryReport) -> str:
    engine = "SQLite" if report.engine == "sqlite" else "PostgreSQL"
    return f"{engine} x{len(report.servers)}"


def row(report: DirectoryReport, baseline: DirectoryReport) -> Row:
    phases = {name: getattr(report, name) for name in PHASES}
    base = {name: getattr(baseline, name) for name in PHASES}
    others = [p.cpu.other for p in phases.values() if p.cpu is not None]
    return Row(
        label=label(report), engine=report.engine, servers=len(report.servers),
        ops_s={name: p.ops_s for name, p in phases.items()},
        ratio={name: round(p.ops_s / base[name].ops_s, 3) if base[name].ops_s else None
               for name, p in phases.items()},
        login_hash_ratio=report.login_hash_ratio,
        server_us_per_op={name: p.server_us_per_op for name, p in phases.items()},
        database_us_per_op={name: p.database_us_per_op for name, p in phases.items()},
        ops_by_server={name: p.ops_by_server for name, p in phases.items()},
        other_cores_max=max(others) if others else None,
    )


async def run(config: CompareConfig, progress: Progress) -> CompareReport:
    """Each configuration in turn; the progress label says which."""
    runs: list[DirectoryReport] = []
    plan = configurations(config.bench)
    for index, bench in enumerate(plan):
        name = ("SQLite" if bench.db is None else "PostgreSQL") + f" x{bench.servers}"

        def step(what: str, share: float, name: str = name, index: int = index) -> None:
            progress(f"{name} ({index + 1}/{len(plan)}): {what}", share)

        runs.append(await directory.run(bench, step))
    progress("done", 1.0)
    return CompareReport(label(runs[0]), [row(r, runs[0]) for r in runs], runs)
