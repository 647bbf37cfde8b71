"""The directory bench's table gives a verdict on its targets only for the stated size."""

from __future__ import annotations

from overlay.bench.directory import (
    DirectoryReport,
    HashRate,
    HashSample,
    Phase,
    Setup,
    Target,
)
from overlay.cli.bench_render import TARGET_CLIENTS, render_directory


def report(clients: int) -> DirectoryReport:
    sample = HashSample(hashes=10, seconds=1.0, hashes_s=10.0, ms_per_hash=100.0, cpu=None)

    def phase(name: str) -> Phase:
        return Phase(name, None, 100, 1.0, 100.0, 1.0, 2.0, 0, {}, None, 0, 0, 0.0, None,
                     None, None)

    return DirectoryReport(
        clients=clients, client_procs=1, cores=2, contacts_per_user=4, duration_s=1.0,
        server="SQLite", setup=Setup(clients, clients, 0.5),
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
