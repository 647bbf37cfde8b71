"""``overlay bench transport`` as a user runs it, in one process and with ``--processes``.

Tiny counts and no figure asserted beyond "measured and positive" (the
machine is shared and noisy): the run completes, the JSON carries the fields
docs/benchmarks.md quotes, and no worker or ``overlay node`` process outlives
the run, whether it ends or is interrupted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.bench.benchprocs import bench_env, bench_tmpdir, processes_with, stop_leftovers
from tests.procs import WAIT, overlay_command, wait_until

TINY = ("--hops", "0,1", "--size", "512", "--count", "40", "--pings", "5",
        "--handshakes", "3", "--time-limit", "120")
FIGURES = {"goodput_msgs_s", "goodput_mb_s", "rtt_p50_ms", "rtt_p99_ms"}
HOP_FIELDS = {"relays", "overlay", "baseline", "goodput_ratio", "rtt_p50_per_hop_us",
              "baseline_rtt_p50_per_hop_us", "rtt_p50_added_per_relay_us",
              "relay_cpu_us_per_msg", "baseline_relay_cpu_us_per_msg"}
HANDSHAKE_FIELDS = {"count", "p50_ms", "p95_ms", "tcp_connect_p50_ms", "tcp_connect_p95_ms"}


@pytest.mark.parametrize("mode", ["in-process", "processes"])
def test_tiny_run_reports_every_hop_and_the_handshake(mode: str) -> None:
    with bench_tmpdir() as tmpdir:
        check_tiny_run(tmpdir, mode)


def check_tiny_run(tmpdir: Path, mode: str) -> None:
    extra = ("--processes",) if mode == "processes" else ()
    result = subprocess.run(overlay_command("bench", "transport", *TINY, *extra, "--json"),
                            capture_output=True, text=True, timeout=180, check=False,
                            env=bench_env(tmpdir))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"mode", "size", "count", "pings", "hops", "handshake"}
    assert (report["mode"], report["size"], report["count"], report["pings"]) == \
        (mode, 512, 40, 5)
    assert [hop["relays"] for hop in report["hops"]] == [0, 1]
    for hop in report["hops"]:
        assert set(hop) == HOP_FIELDS
        for side in ("overlay", "baseline"):
            assert set(hop[side]) == FIGURES
            assert all(hop[side][name] > 0 for name in FIGURES), hop
            assert hop[side]["rtt_p99_ms"] >= hop[side]["rtt_p50_ms"]
        assert hop["goodput_ratio"] > 0
        assert hop["rtt_p50_per_hop_us"] > 0 and hop["baseline_rtt_p50_per_hop_us"] > 0
    assert report["hops"][0]["rtt_p50_added_per_relay_us"] is None
    assert isinstance(report["hops"][1]["rtt_p50_added_per_relay_us"], float)
    assert report["hops"][0]["relay_cpu_us_per_msg"] is None  # no relay to measure
    for name in ("relay_cpu_us_per_msg", "baseline_relay_cpu_us_per_msg"):
        cpu = report["hops"][1][name]
        if mode == "processes":
            assert isinstance(cpu, float) and cpu >= 0  # 40 messages may take under a tick
        else:
            assert cpu is None  # one process: the relays' share cannot be told apart
    shake = report["handshake"]
    assert set(shake) == HANDSHAKE_FIELDS and shake["count"] == 3
    assert shake["p95_ms"] >= shake["p50_ms"] > 0
    assert shake["tcp_connect_p95_ms"] >= shake["tcp_connect_p50_ms"] > 0
    assert "Traceback" not in result.stderr
    assert "handshakes" in result.stderr  # progress on stderr, figures on stdout
    assert processes_with(tmpdir) == []
    assert list(tmpdir.iterdir()) == []  # the nodes' state directories and logs are gone


def test_text_output_names_the_baseline_and_the_handshake_and_draws_it() -> None:
    with bench_tmpdir() as tmpdir:
        pictures = tmpdir / "pictures"
        result = subprocess.run(overlay_command("bench", "transport", *TINY,
                                                "--plot", str(pictures)),
                                capture_output=True, text=True, timeout=180, check=False,
                                env=bench_env(tmpdir))
        assert result.returncode == 0, result.stderr
        assert "of plain trio" in result.stdout
        assert "handshake (3, TCP connect to established)" in result.stdout
        assert f"wrote {pictures / 'transport.png'}" in result.stderr
        assert png_size(pictures / "transport.png") == (1000, 450)
        (pictures / "transport.png").unlink()
        pictures.rmdir()


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header, which must be a real PNG's."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_interrupted_processes_run_stops_every_node_and_forwarder() -> None:
    with bench_tmpdir() as tmpdir:
        check_interrupted_run(tmpdir)


def _command_lines(tmpdir: Path) -> list[bytes]:
    lines = []
    for pid in processes_with(tmpdir):
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            continue
    return lines


def check_interrupted_run(tmpdir: Path) -> None:
    # Hops done quickly; then handshakes without end, against an `overlay node` process.
    bench = subprocess.Popen(
        overlay_command("bench", "transport", "--processes", "--hops", "1", "--count", "40",
                        "--pings", "5", "--handshakes", "1000000", "--time-limit", "300"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=bench_env(tmpdir))
    try:
        wait_until(lambda: any(b"handshake-target" in line for line in _command_lines(tmpdir)),
                   "the handshake target node", timeout=90)
        assert len(processes_with(tmpdir)) >= 3  # the bench, a plain sink, `overlay node`
        time.sleep(1.0)
        bench.send_signal(signal.SIGINT)  # only the bench: its children must be stopped by it
        _, stderr = bench.communicate(timeout=WAIT)
        assert bench.returncode == 130, stderr
        assert b"Traceback" not in stderr
        wait_until(lambda: processes_with(tmpdir) == [], "no process left", timeout=10)
        assert list(tmpdir.iterdir()) == []
    finally:
        stop_leftovers(bench, tmpdir)


def test_time_limit_ends_the_run_with_one_line_and_no_process_left() -> None:
    with bench_tmpdir() as tmpdir:
        result = subprocess.run(
            overlay_command("bench", "transport", "--processes", "--hops", "1",
                            "--count", "100000000", "--time-limit", "3"),
            capture_output=True, text=True, timeout=120, check=False, env=bench_env(tmpdir))
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines()[-1] == \
            "overlay bench: the benchmark did not finish within 3 s (see --time-limit)"
        assert "Traceback" not in result.stderr
        wait_until(lambda: processes_with(tmpdir) == [], "no process left", timeout=10)
        assert list(tmpdir.iterdir()) == []
