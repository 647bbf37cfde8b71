"""``overlay bench storm`` as a user runs it, small: a real server killed and restarted,
a dozen clients back, the login queue held to its bound, nobody giving up."""

from __future__ import annotations

import json
import subprocess

from tests.procs import overlay_command


def test_a_small_storm_comes_back_within_the_queue_bound() -> None:
    done = subprocess.run(overlay_command("bench", "storm", "--clients", "12",
                                          "--max-login-queue", "2", "--timeout", "60",
                                          "--json"),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["back"] == 12 and report["gave_up"] == 0
    assert report["all_seconds"] is not None and report["p99_seconds"] <= report["all_seconds"]
    assert report["peak_queue"] is not None and 1 <= report["peak_queue"] <= 2
    assert report["shed_by_server"] == report["busy_429"]  # each 429 the clients got
    assert report["probes"] >= 1 and report["probe_failures"] == 0
