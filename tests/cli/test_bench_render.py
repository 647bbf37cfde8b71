"""The directory bench's table gives a verdict on its targets only for the stated size;
the --compare table sets each configuration beside the baseline."""

from __future__ import annotations

from overlay.bench.directory import (
    CpuUse,
    DirectoryReport,
    HashRate,
    HashSample,
    Phase,
    Setup,
    Target,
)
from overlay.bench.directory_compare import CompareReport, row
from overlay.cli.bench_render import TARGET_CLIENTS, render_directory, render_directory_compare


def report(clients: int, servers: int = 1, ops: int = 100,
           database: float | None = None) -> DirectoryReport:
    cpu = CpuUse(1.0, clients=0.5, bench=0.0, database=database, other=0.0, idle=0.5,
                 servers=[1.0 / servers] * servers)
    sample = HashSample(hashes=10, seconds=1.0, hashes_s=10.0, ms_per_hash=100.0, cpu=cpu)

    def phase(name: str) -> Phase:
        return Phase(name, None, ops, 1.0, float(ops), 1.0, 2.0, 0, {}, None, 0, 0, 0.0,
                     [ops // servers] * servers, cpu, 1e6 / ops, 5e5 / ops,
                     None if database is None else database * 1e6 / ops)

    return DirectoryReport(
        clients=clients, client_procs=1, cores=2, contacts_per_user=4, duration_s=1.0,
        engine="sqlite" if database is None else "postgresql",
        database="SQLite x.sqlite3" if database is None else "postgresql://db schema s",
        servers=[f"127.0.0.1:{7000 + n}" for n in range(servers)],
        setup=Setup(clients, clients, 0.5),
        hash=HashRate(1, sample, sample, 10.0), logins=phase("logins"),
        lookups=phase("lookups"), presence=phase("presence"), login_hash_ratio=0.5,
        targets=[Target("login_hash_ratio", 0.8, "min", 0.5, False),
                 Target("lookups_p99_ms", 20, "max", 2.0, True)],
        notes=[])


def test_verdicts_only_at_the_stated_size() -> None:
    full = render_directory(report(TARGET_CLIENTS))
    assert "login_hash_ratio" in full and ": MISSED" in full and ": met" in full
    small = render_directory(report(4))
    assert "this run had 4, so no verdict" in small
    assert "MISSED" not in small and ": met" not in small


def test_a_rounded_negative_zero_is_shown_as_zero() -> None:
    from overlay.cli.bench_render import _num

    assert _num(round(-0.0001, 2)) == "0" and _num(-0.0) == "0"
    assert _num(-1.5) == "-1.5" and _num(None) == "-" and _num(3) == "3"


def test_a_two_server_run_shows_each_server_and_the_database() -> None:
    text = render_directory(report(TARGET_CLIENTS, servers=2, database=0.1))
    assert "2 servers on 127.0.0.1:7000, 127.0.0.1:7001; database postgresql://db" in text
    assert "answered by each server: logins 50 / 50" in text
    assert "db/op" in text and "1000us" in text  # 0.1 cores over 100 ops/s


def test_compare_table_gives_ratios_to_the_first_run() -> None:
    runs = [report(TARGET_CLIENTS), report(TARGET_CLIENTS, ops=80, database=0.1),
            report(TARGET_CLIENTS, servers=2, ops=120, database=0.1)]
    rows = [row(run, runs[0]) for run in runs]
    assert [r.label for r in rows] == ["SQLite x1", "PostgreSQL x1", "PostgreSQL x2"]
    assert rows[1].ratio["lookups"] == 0.8 and rows[2].ratio["presence"] == 1.2
    text = render_directory_compare(CompareReport("SQLite x1", rows, runs))
    lines = text.splitlines()
    assert "ratios to SQLite x1 of the same invocation" in lines[0]
    assert any(line.startswith("PostgreSQL x1") and "( 0.80x)" in line for line in lines)
    assert any(line.startswith("PostgreSQL x2") and "( 1.20x)" in line for line in lines)
    assert "PostgreSQL x2: answered by each server: logins 60 / 60" in text
    # Server CPU per login in ms, and the database's beside it on PostgreSQL.
    assert any(line.startswith("PostgreSQL x1") and "12.5ms + 1.2ms" in line
               for line in lines), text
