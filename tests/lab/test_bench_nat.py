"""``overlay bench nat``: a tiny real run in the lab, and its command line without root.

The run (one session of easy-easy and one of hard-hard, real processes in
network namespaces) checks the report's fields rather than its speed: the
easy pair ends direct and its second window crosses no supernode, the hard
pair stays relayed and still delivers every message, and the targets'
summary lines agree with the sessions.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from overlay.cli.main import main
from tests.lab.conftest import lab_prefix

PREFIX = lab_prefix("ovb")
OVERLAY = [sys.executable, "-m", "overlay"]


@pytest.mark.netns
def test_a_tiny_run_reports_easy_direct_and_hard_relayed_and_delivered(
        netns_required: None) -> None:
    run = subprocess.run([*OVERLAY, "bench", "nat", "--json", "--repeat", "1",
                          "--pairings", "easy-easy,hard-hard", "--messages", "20",
                          "--start-delay", "3", "--prefix", PREFIX],
                         capture_output=True, text=True, timeout=400, check=False)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    # One progress line per session, naming its pairing and outcome.
    progress = [line for line in run.stderr.splitlines() if " 1/1: " in line]
    assert [line.split(" 1/1")[0] for line in progress] == ["easy-easy", "hard-hard"], run.stderr
    easy, hard = report["pairings"]
    sessions = {s["pairing"]: s for s in report["sessions"]}
    assert set(sessions) == {"easy-easy", "hard-hard"}
    assert all(s["error"] is None for s in sessions.values()), sessions

    assert (easy["pairing"], easy["direct_expected"]) == ("easy-easy", True)
    assert (easy["sessions"], easy["direct"], easy["delivered"]) == (1, 1, 1), easy
    assert easy["direct_share"] == 1.0
    s = sessions["easy-easy"]
    assert s["direct"] and s["after_path"] == "direct" and s["clean_before"], s
    assert s["time_to_direct_s"] is not None and s["time_to_direct_s"] >= 0
    assert easy["time_to_direct_median_s"] == easy["time_to_direct_p90_s"] == round(
        s["time_to_direct_s"], 3)
    assert s["attempts"] >= 1 and easy["attempts_per_success"] == s["attempts"]
    assert s["mapping"] == "endpoint-independent"
    # Relayed first: the supernodes forwarded the first window; then nothing of it.
    assert s["before_forwarded"] >= 2 * 20 and s["after_forwarded"] == 0, s
    assert easy["rtt_ratio"] is not None and easy["relayed_rtt_ms"] > 0

    assert (hard["pairing"], hard["direct_expected"]) == ("hard-hard", False)
    assert (hard["sessions"], hard["direct"], hard["delivered"]) == (1, 0, 1), hard
    h = sessions["hard-hard"]
    assert not h["direct"] and h["after_path"] == "relayed" and h["time_to_direct_s"] is None
    assert h["attempts"] == 3 and h["mapping"] == "endpoint-dependent", h
    assert h["before_forwarded"] >= 2 * 20 and h["after_forwarded"] >= 2 * 20, h
    assert hard["time_to_direct_median_s"] is None and hard["attempts_per_success"] is None
    assert h["sent"] > 2 * 20  # both windows and the messages while punching

    assert report["direct_share_where_expected"] == 1.0
    assert report["hard_hard_delivered_share"] == 1.0
    assert report["repeat"] == 1 and report["messages"] == 20
    assert report["stopped_early"] is False


@pytest.mark.parametrize("args, words", [
    (["--repeat", "0"], "--repeat must be at least 1, got 0"),
    (["--repeat", "x"], "--repeat not a whole number: 'x'"),
    (["--pairings", "easy-medium"], "--pairings: choose among"),
    (["--start-delay", "50", "--session-timeout", "60"], "--session-timeout must exceed"),
])
def test_bad_options_are_one_line_and_status_2(args: list[str], words: str) -> None:
    """Checked before the lab, so this holds without root too."""
    run = subprocess.run([*OVERLAY, "bench", "nat", *args], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line.startswith("overlay bench nat: ") and words in line, line


def test_without_the_lab_one_line_and_status_1(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Where the lab cannot run (no root, no namespaces) the reason, in one line."""
    import overlay.lab

    monkeypatch.setattr(overlay.lab, "available", lambda: "the NAT lab needs root")
    assert main(["bench", "nat", "--repeat", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "overlay bench: needs the NAT lab: the NAT lab needs root"], captured.err
