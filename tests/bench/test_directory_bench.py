"""``overlay bench directory`` as a user runs it: a real process, its server and its clients.

Small and short on purpose, and no figure is asserted (the machine is shared
and noisy): the run must complete, every phase must have succeeded at
something, the JSON must carry the fields the docs quote, and no server or
client process may outlive the run, whether it ends or is interrupted.  On
PostgreSQL (the session's throwaway cluster): every server process of a
``--servers 2`` run answers requests, the run's own schema is gone afterwards,
and ``--compare`` sets its runs beside SQLite x1.
Each run gets its own TMPDIR, which every child inherits, so leftovers are
found by their environment without confusing them with anyone else's.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from overlay.bench.directory_db import with_params
from overlay.bench.directory_phases import server_of
from tests.bench.benchprocs import bench_env, bench_tmpdir, processes_with, stop_leftovers
from tests.directory.postgres import Cluster
from tests.procs import WAIT, overlay_command, wait_until

SMALL = ("--clients", "4", "--duration", "0.5", "--hash-seconds", "0.3", "--client-procs", "2")
PHASE_FIELDS = {"name", "offered_s", "ops", "seconds", "ops_s", "p50_ms", "p99_ms", "errors",
                "errors_by_kind", "first_error", "late", "notices", "notices_s", "cpu",
                "server_us_per_op", "clients_us_per_op", "ops_by_server",
                "database_us_per_op"}


def test_small_run_reports_every_phase_and_leaves_nothing_behind() -> None:
    with bench_tmpdir() as tmpdir:
        check_small_run(tmpdir)


def check_small_run(tmpdir: Path) -> None:
    result = subprocess.run(overlay_command("bench", "directory", *SMALL, "--json"),
                            capture_output=True, text=True, timeout=90, check=False,
                            env=bench_env(tmpdir))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["clients"] == 4 and report["client_procs"] == 2
    assert report["engine"] == "sqlite" and len(report["servers"]) == 1
    assert report["setup"]["users"] == 4 and report["setup"]["contact_pairs"] == 4
    assert report["hash"]["threads"] >= 1
    for sample in ("before", "after"):
        assert report["hash"][sample]["hashes"] > 0
    assert report["hash"]["hashes_s"] > 0 and report["login_hash_ratio"] > 0
    for name in ("logins", "lookups", "presence"):
        phase = report[name]
        assert set(phase) == PHASE_FIELDS
        assert phase["name"] == name and phase["ops"] > 0, phase
        assert phase["p50_ms"] is not None and phase["p99_ms"] >= phase["p50_ms"]
        # Four clients in closed loops can outrun the server's 200 requests/s per
        # connection: those 429s are expected; any other error is a bug.
        assert set(phase["errors_by_kind"]) <= {"429"}, phase["first_error"]
        assert phase["ops_by_server"] == [phase["ops"]]
        assert phase["database_us_per_op"] is None  # SQLite runs inside the server
    assert report["presence"]["notices"] > 0  # contacts were told
    assert {t["figure"] for t in report["targets"]} == {
        "login_hash_ratio", "lookups_s", "lookups_p99_ms", "presence_s", "presence_p99_ms"}
    assert any("targets are stated for 100 clients" in note for note in report["notes"])
    assert "Traceback" not in result.stderr
    assert "logins" in result.stderr  # progress goes to stderr, figures to stdout
    assert processes_with(tmpdir) == []
    assert list(tmpdir.iterdir()) == []  # the server's state and database are gone


def test_interrupted_run_stops_its_server_and_clients() -> None:
    with bench_tmpdir() as tmpdir:
        check_interrupted_run(tmpdir)


def check_interrupted_run(tmpdir: Path) -> None:
    bench = subprocess.Popen(
        overlay_command("bench", "directory", "--clients", "4", "--client-procs", "2",
                        "--duration", "60", "--hash-seconds", "0.3"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=bench_env(tmpdir))
    try:
        # The server and both client processes are up once setup has begun.
        wait_until(lambda: len(processes_with(tmpdir)) >= 4, "the server and the clients")
        time.sleep(0.5)
        bench.send_signal(signal.SIGINT)  # only the bench: its children must be stopped by it
        _, stderr = bench.communicate(timeout=WAIT)
        assert bench.returncode == 130, stderr
        assert b"Traceback" not in stderr
        wait_until(lambda: processes_with(tmpdir) == [], "no process left", timeout=5)
        assert list(tmpdir.iterdir()) == []
    finally:
        stop_leftovers(bench, tmpdir)


def test_users_are_spread_evenly_over_servers_within_each_worker() -> None:
    # Two workers, two servers: user % 2 would put each worker on one server only.
    for worker in range(2):
        assigned = [server_of(user, 2, 2) for user in range(worker, 100, 2)]
        assert assigned.count(0) == assigned.count(1) == 25
    assert {server_of(user, 2, 3) for user in range(0, 100, 2)} == {0, 1, 2}
    assert {server_of(user, 3, 1) for user in range(100)} == {0}


def test_the_schema_is_added_to_the_url_s_own_options() -> None:
    url = with_params("postgresql://u:pw@db/overlay?options=-cwork_mem%3D8MB&sslmode=require",
                      "overlay_bench_1")
    assert url.startswith("postgresql://u:pw@db/overlay?")
    params = dict(psycopg.conninfo.conninfo_to_dict(url))
    assert params["options"] == "-cwork_mem=8MB -csearch_path=overlay_bench_1"
    assert params["application_name"] == "overlay_bench_1"
    assert params["sslmode"] == "require"


def run_usage_error(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(overlay_command("bench", "directory", *args), capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.mark.parametrize("args", [("--servers", "2"), ("--servers", "2", "--db", "x.sqlite3"),
                                  ("--compare",), ("--compare", "--db", "x.sqlite3")])
def test_several_servers_or_compare_without_postgresql_is_a_usage_error(
        args: tuple[str, ...], tmp_path: Path) -> None:
    args = tuple(str(tmp_path / a) if a.endswith(".sqlite3") else a for a in args)
    done = run_usage_error(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "postgresql://" in lines[0], done.stderr
    assert not list(tmp_path.iterdir())  # nothing started, nothing created


def schemas(cluster: Cluster) -> set[str]:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        rows = conn.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
    return {str(name) for (name,) in rows}


def run_json(tmpdir: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(overlay_command("bench", "directory", *SMALL, *args, "--json"),
                          capture_output=True, text=True, timeout=240, check=False,
                          env=bench_env(tmpdir))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def check_every_server_answered(report: dict[str, Any], servers: int) -> None:
    assert report["engine"] == "postgresql" and len(report["servers"]) == servers
    for name in ("logins", "lookups", "presence"):
        phase = report[name]
        assert phase["ops"] > 0 and set(phase["errors_by_kind"]) <= {"429"}, phase
        assert len(phase["ops_by_server"]) == servers and sum(phase["ops_by_server"]) \
            == phase["ops"]
        assert all(ops > 0 for ops in phase["ops_by_server"]), (name, phase["ops_by_server"])
        assert phase["server_us_per_op"] > 0
        assert len(phase["cpu"]["servers"]) == servers
        # The cluster runs on this machine: its backends are found and metered.
        assert phase["cpu"]["database"] is not None and phase["database_us_per_op"] is not None
    assert report["logins"]["database_us_per_op"] > 0  # a login writes its session
    assert report["presence"]["notices"] > 0  # contacts on the other server were told


@pytest.mark.postgres
def test_two_servers_on_postgresql_both_answer_and_the_schema_goes(
        postgres_cluster: Cluster) -> None:
    # A database that is not empty: its own overlay_schema, from a "newer" program,
    # would stop a server that used it; the bench's run must not see it.
    busy = postgres_cluster.fresh_schema()
    with psycopg.connect(postgres_cluster.url(busy), autocommit=True) as conn:
        conn.execute("CREATE TABLE overlay_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO overlay_schema VALUES (1000000)")
    before = schemas(postgres_cluster)
    with bench_tmpdir() as tmpdir:
        report = run_json(tmpdir, "--clients", "6", "--db", postgres_cluster.url(busy),
                          "--servers", "2")
        check_every_server_answered(report, 2)
        assert " schema overlay_bench_" in report["database"]
        assert processes_with(tmpdir) == []
        assert list(tmpdir.iterdir()) == []
    assert schemas(postgres_cluster) == before  # the run's schema was dropped


@pytest.mark.postgres
def test_compare_runs_sqlite_then_postgresql_once_and_twice(postgres_cluster: Cluster) -> None:
    before = schemas(postgres_cluster)
    with bench_tmpdir() as tmpdir:
        report = run_json(tmpdir, "--clients", "6", "--db", postgres_cluster.url(),
                          "--compare")
        assert processes_with(tmpdir) == []
    assert schemas(postgres_cluster) == before
    assert report["baseline"] == "SQLite x1"
    assert [row["label"] for row in report["rows"]] == ["SQLite x1", "PostgreSQL x1",
                                                        "PostgreSQL x2"]
    assert [run["engine"] for run in report["runs"]] == ["sqlite", "postgresql", "postgresql"]
    assert report["rows"][0]["ratio"] == {"logins": 1.0, "lookups": 1.0, "presence": 1.0}
    for row, run in zip(report["rows"], report["runs"], strict=True):
        for name in ("logins", "lookups", "presence"):
            assert row["ops_s"][name] == run[name]["ops_s"] > 0
            baseline = report["runs"][0][name]["ops_s"]
            assert row["ratio"][name] == round(run[name]["ops_s"] / baseline, 3)
            assert row["server_us_per_op"][name] == run[name]["server_us_per_op"]
    check_every_server_answered(report["runs"][2], 2)


@pytest.mark.postgres
def test_an_interrupted_postgresql_run_drops_its_schema(postgres_cluster: Cluster) -> None:
    before = schemas(postgres_cluster)
    with bench_tmpdir() as tmpdir:
        bench = subprocess.Popen(
            overlay_command("bench", "directory", "--clients", "4", "--client-procs", "2",
                            "--duration", "60", "--hash-seconds", "0.3",
                            "--db", postgres_cluster.url(), "--servers", "2"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=bench_env(tmpdir))
        try:
            # Both servers and both client processes are up once setup has begun.
            wait_until(lambda: len(processes_with(tmpdir)) >= 5, "the servers and clients")
            assert len(schemas(postgres_cluster) - before) == 1  # the run's own
            time.sleep(0.5)
            bench.send_signal(signal.SIGINT)
            _, stderr = bench.communicate(timeout=WAIT)
            assert bench.returncode == 130, stderr
            assert b"Traceback" not in stderr
            wait_until(lambda: processes_with(tmpdir) == [], "no process left", timeout=5)
        finally:
            stop_leftovers(bench, tmpdir)
    assert schemas(postgres_cluster) == before


def test_a_database_the_bench_cannot_use_is_one_line(tmp_path: Path) -> None:
    existing = tmp_path / "directory.sqlite3"
    existing.write_bytes(b"someone's data")
    unreachable = f"postgresql://me:s3cret@/db?host={tmp_path}&connect_timeout=2"
    for db, why in ((str(existing), "exists"), (unreachable, "cannot use database")):
        done = run_usage_error("--db", db, "--clients", "2")
        assert done.returncode == 1, done.stderr
        # Progress lines first (stderr is not a terminal here), then the one error line.
        errors = [line for line in done.stderr.splitlines() if line.startswith("overlay")]
        assert len(errors) == 1 and why in errors[0], done.stderr
        assert "Traceback" not in done.stderr and "s3cret" not in done.stderr
    assert existing.read_bytes() == b"someone's data"  # never touched
