"""The ``overlay`` command line as a user runs it: real processes on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import time

from tests.procs import node_processes, overlay_command, run_overlay, short_tempdir

FAST = ("--hello-interval", "0.2", "--dead-after", "3")


def neighbour_ids(status: dict[str, object]) -> set[str]:
    return {n["id"] for n in status["neighbours"]}  # type: ignore[attr-defined]


def test_two_nodes_become_neighbours_and_status_shows_each_other() -> None:
    with node_processes() as start:
        a = start("a", "--listen", "127.0.0.1:0", *FAST)
        a_status = a.ready()
        b = start("b", "--listen", "127.0.0.1:0", "--connect", a_status["listen"], *FAST)
        b_status = b.ready()
        a_status = a.wait_status(lambda s: neighbour_ids(s) == {b_status["node_id"]},
                                 "a to see b")
        b_status = b.wait_status(
            lambda s: any(n["srtt_ms"] is not None for n in s["neighbours"]), "b's RTT to a")
        [to_a] = b_status["neighbours"]
        assert to_a["id"] == a_status["node_id"] and to_a["address"] == a_status["listen"]
        assert to_a["state"] == "up" and to_a["srtt_ms"] > 0
        human = run_overlay("status", "--state", str(b.state))
        assert human.returncode == 0
        assert a_status["node_id"] in human.stdout and "SRTT" in human.stdout
        assert "up via" in b.log  # neighbour up is logged with its RTT
        assert a.stop(signal.SIGINT) == 0 and b.stop(signal.SIGTERM) == 0
        for node in (a, b):
            assert "Traceback" not in node.log


def test_status_shows_a_configured_neighbour_that_is_down_until_it_returns() -> None:
    with node_processes() as start:
        b = start("b", "--listen", "127.0.0.1:0", *FAST)
        b_status = b.ready()
        a = start("a", "--listen", "127.0.0.1:0", "--connect", b_status["listen"], *FAST)
        a.wait_status(lambda s: [c["state"] for c in s["configured"]] == ["linked"],
                      "a linked to b")
        assert b.stop(signal.SIGTERM) == 0
        status = a.wait_status(
            lambda s: s["configured"][0]["state"] != "linked"
            and s["configured"][0]["failures"] >= 1, "b shown down")
        [down] = status["configured"]
        assert down["address"] == b_status["listen"] and down["id"] == b_status["node_id"]
        assert down["last_error"] == "connection refused"
        human = run_overlay("status", "--state", str(a.state)).stdout
        assert "not linked  1 of 1 configured" in human
        [row] = [line.split() for line in human.splitlines() if b_status["listen"] in line]
        assert row[1] == b_status["node_id"][:8] and row[-2:] == ["connection", "refused"]
        again = start("b2", "--listen", b_status["listen"], *FAST)
        again.ready()
        a.wait_status(lambda s: [c["state"] for c in s["configured"]] == ["linked"],
                      "a linked to b again")
        assert "not linked" not in run_overlay("status", "--state", str(a.state)).stdout


def test_ctrl_c_and_sigterm_stop_a_node_promptly_and_quietly() -> None:
    with node_processes() as start:
        for sig in (signal.SIGINT, signal.SIGTERM):
            node = start(f"n{sig}", "--listen", "127.0.0.1:0")
            node.ready()
            began = time.monotonic()
            assert node.stop(sig) == 0
            elapsed = time.monotonic() - began
            # The target is 1 s; this bound only catches a hang on a loaded machine.
            assert elapsed < 5, f"took {elapsed:.2f} s to stop"
            assert "Traceback" not in node.log
            assert not (node.state / "control.sock").exists()


def test_hung_neighbour_is_declared_dead_and_the_link_returns_after_restart() -> None:
    with node_processes() as start:
        b = start("b", "--listen", "127.0.0.1:0", *FAST)
        b_status = b.ready()
        a = start("a", "--listen", "127.0.0.1:0", "--connect", b_status["listen"], *FAST)
        a.wait_status(lambda s: neighbour_ids(s) == {b_status["node_id"]}, "a to link to b")
        b.proc.send_signal(signal.SIGSTOP)  # alive to TCP, silent to pings
        stopped = time.monotonic()
        a.wait_status(lambda s: not s["neighbours"], "a to declare b dead")
        detected = time.monotonic() - stopped
        assert "nothing heard for" in a.log
        assert detected < 0.6 + 5, f"took {detected:.2f} s with a 0.6 s dead interval"
        b.kill()
        b2 = start("b", "--listen", b_status["listen"], *FAST)  # same key, same address
        assert b2.ready()["node_id"] == b_status["node_id"]
        a.wait_status(lambda s: neighbour_ids(s) == {b_status["node_id"]},
                      "a to relink to the restarted b")


def test_a_second_node_cannot_share_a_state_directory() -> None:
    with node_processes() as start:
        first = start("same", "--listen", "127.0.0.1:0")
        first.ready()
        second = run_overlay("node", "--state", str(first.state), "--listen", "127.0.0.1:0")
        assert second.returncode == 1
        assert "in use by another overlay process" in second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.splitlines()) == 1


def test_busy_port_is_one_clear_line() -> None:
    with node_processes() as start:
        first = start("first", "--listen", "127.0.0.1:0")
        listen = first.ready()["listen"]
        state = short_tempdir()
        second = run_overlay("node", "--state", str(state), "--listen", listen)
        assert second.returncode == 1
        assert f"cannot listen on {listen}" in second.stderr
        assert "Traceback" not in second.stderr


def test_bad_arguments_print_one_line_and_the_usage_with_status_2() -> None:
    for args in (
        ("node", "--listen", "nowhere"),
        ("node", "--listen", "127.0.0.1:99999"),
        ("node", "--connect", "zz@127.0.0.1:1"),
        ("node", "--hello-interval", "-1"),
        ("node", "--dead-after", "0"),
        ("status", "--frobnicate"),
        ("launch",),
        (),
    ):
        result = run_overlay(*args)
        assert result.returncode == 2, args
        assert result.stderr.startswith("usage: overlay"), args
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_status_without_a_running_node_is_one_clear_line() -> None:
    state = short_tempdir()
    result = run_overlay("status", "--state", str(state))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"overlay status: no node is running with state directory {state} "
        f"(no answer on {state}/control.sock)"
    )


def test_help_teaches_each_command() -> None:
    top = run_overlay("--help")
    assert top.returncode == 0
    for command in ("node", "status", "demo"):
        assert command in top.stdout
        sub = run_overlay(command, "--help")
        assert sub.returncode == 0 and "usage: overlay " + command in sub.stdout
    assert "--connect" in run_overlay("node", "--help").stdout


def test_node_key_is_created_private_and_reused() -> None:
    with node_processes() as start:
        node = start("keyed", "--listen", "127.0.0.1:0")
        first_id = node.ready()["node_id"]
        key = node.state / "node.key"
        assert key.stat().st_mode & 0o777 == 0o600
        node.stop()
        again = start("keyed", "--listen", "127.0.0.1:0")
        assert again.ready()["node_id"] == first_id


def test_demo_runs_the_whole_system_and_prints_the_conversation() -> None:
    result = run_overlay("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("sn1", "sn2", "sn3", "alice", "bob", "carol", "dave"):
        assert f"  {name} " in out
    assert out.count("behind NAT: dials out only") == 2
    assert out.count("reachable at 127.0.0.1:") == 2
    lines = out.splitlines()
    first = lines.index("  alice -> bob    Hi Bob! We are both behind NAT, so supernodes "
                        "relay this.")
    # Both behind NAT: their homes relay the first message (sent before any punch).
    assert lines[first + 1].endswith(", relayed via sn1 -> sn3")
    assert "direct" in lines[first + 5]  # alice -> carol: reachable users get direct links
    # Then their clients punch a hole: the demo shows the upgrade, and the last message
    # between the two goes direct.
    punched = [line for line in lines if line.startswith("  alice <> bob    ")]
    assert len(punched) == 1 and "hole punched" in punched[0], out
    assert "direct now (" in punched[0]
    last = lines.index(punched[0]) + 1
    assert lines[last].startswith("    bob -> alice  Our clients punched a hole")
    assert lines[last + 1].endswith(", direct")
    assert "9 of 9 delivered" in out
    assert "stopped cleanly" in out
    assert "Traceback" not in result.stderr


def test_status_json_is_valid_json() -> None:
    with node_processes() as start:
        node = start("j", "--listen", "127.0.0.1:0")
        node.ready()
        result = run_overlay("status", "--json", "--state", str(node.state))
        assert json.loads(result.stdout)["listen"].startswith("127.0.0.1:")


def start_line(start, count: int) -> list:  # type: ignore[no-untyped-def]
    """``count`` node processes in a line, each connecting to the previous one, and
    every node with a route to every other (replies need the way back too)."""
    nodes, previous = [], None
    for i in range(count):
        args = ["--listen", "127.0.0.1:0", *FAST]
        if previous is not None:
            args += ["--connect", previous]
        node = start(f"line{i}", *args)
        previous = node.ready()["listen"]
        nodes.append(node)
    for node in nodes:
        node.wait_status(lambda s: sum(1 for r in s["routes"] if r["next_hop"]) == count - 1,
                         f"routes to all {count - 1} other nodes")
    return nodes


def test_traceroute_across_real_processes_prints_the_five_hops_in_order() -> None:
    with node_processes() as start:
        nodes = start_line(start, 6)
        ids = [n.ready()["node_id"] for n in nodes]
        listens = [n.ready()["listen"] for n in nodes]
        result = run_overlay("traceroute", ids[-1], "--state", str(nodes[0].state))
        assert result.returncode == 0, result.stderr
        hops = [line.split() for line in result.stdout.splitlines()[1:]]
        assert [h[0] for h in hops] == ["1", "2", "3", "4", "5"]
        assert [h[1] for h in hops] == ids[1:]
        assert [h[2] for h in hops] == listens[1:]
        assert all(h[-1] == "ms" for h in hops)
        status = run_overlay("status", "--state", str(nodes[0].state))
        assert "routes      5" in status.stdout


def test_route_names_the_next_hop_like_ip_route_get_and_sends_nothing() -> None:
    with node_processes() as start:
        nodes = start_line(start, 3)  # each dialled the one before: 2 -> 1 -> 0
        ids = [n.ready()["node_id"] for n in nodes]
        listens = [n.ready()["listen"] for n in nodes]
        last = str(nodes[2].state)
        before = nodes[2].ready()["forwarding"]["originated"]
        result = run_overlay("route", ids[0][:6], "--state", last)
        assert result.returncode == 0, result.stderr
        words = result.stdout.split()
        assert words[:4] == [ids[0], "via", ids[1], f"({listens[1]})"]
        assert words[4] == "metric" and float(words[5]) > 0 and words[6] == "ms"
        answer = json.loads(run_overlay("route", ids[1], "--state", last, "--json").stdout)
        assert answer["kind"] == "route" and answer["next_hop"] == ids[1]
        assert answer["next_hop_address"] == listens[1] and answer["srtt_ms"] > 0
        assert run_overlay("route", ids[2], "--state", last).stdout == \
            f"{ids[2]} local (this node)\n"
        nobody = "cd" * 16
        missing = run_overlay("route", nobody, "--state", last)
        assert (missing.returncode, missing.stdout) == (1, f"{nobody} unreachable: no route\n")
        assert nodes[2].ready()["forwarding"]["originated"] == before  # nothing was sent


def test_ping_by_prefix_and_ttl_exceeded_and_bad_destination() -> None:
    with node_processes() as start:
        nodes = start_line(start, 3)
        target = nodes[2].ready()["node_id"]
        state = str(nodes[0].state)
        ok = run_overlay("ping", target[:8], "-c", "2", "-i", "0.1", "--state", state)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.count("reply from") == 2 and "0% loss" in ok.stdout
        short = run_overlay("ping", target, "-c", "1", "--ttl", "1", "--state", state)
        assert short.returncode == 1 and "time exceeded from" in short.stdout
        unknown = run_overlay("ping", "ffff", "-c", "1", "--state", state)
        assert unknown.returncode == 1
        assert unknown.stderr.strip() == (
            "overlay ping: no known node id starts with ffff (give the full id)")
        as_json = run_overlay("ping", target, "-c", "1", "--json", "--state", state)
        assert json.loads(as_json.stdout)["kind"] == "reply"


def test_ctrl_c_during_a_benchmark_stops_it_without_a_traceback() -> None:
    proc = subprocess.Popen(overlay_command("bench", "routing", "--nodes", "200"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # well into the run, whatever the machine's speed
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "interrupted" in err


def test_unknown_topology_is_one_clear_line() -> None:
    result = run_overlay("bench", "routing", "--topology", "nosuch")
    assert result.returncode == 1
    assert result.stderr.startswith("overlay bench: unknown topology 'nosuch'")
    assert "waxman" in result.stderr and "Traceback" not in result.stderr


def test_a_mebibyte_file_sent_across_three_hops_arrives_bit_for_bit() -> None:
    with node_processes() as start:
        nodes = start_line(start, 4)  # sender, two relays, receiver: three hops
        target = nodes[-1].ready()["node_id"]
        root = nodes[0].state.parent
        source, received = root / "payload.bin", root / "received.bin"
        source.write_bytes(b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest()
                                    for i in range(1 << 15)))  # 1 MiB
        listener = subprocess.Popen(
            overlay_command("listen", "--count", "1", "--output", str(received),
                            "--state", str(nodes[-1].state)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            sent = run_overlay("send", target[:8], "--file", str(source),
                               "--state", str(nodes[0].state))
            assert sent.returncode == 0, sent.stderr
            assert "acknowledged" in sent.stdout
            out, err = listener.communicate(timeout=30)
            assert listener.returncode == 0, err
        finally:
            if listener.poll() is None:
                listener.kill()
        assert hashlib.sha256(received.read_bytes()).hexdigest() == \
            hashlib.sha256(source.read_bytes()).hexdigest()
        assert f"from {nodes[0].ready()['node_id'][:8]}" in out


def test_send_text_and_listen_prints_it_with_the_sender() -> None:
    with node_processes() as start:
        nodes = start_line(start, 2)
        listener = subprocess.Popen(
            overlay_command("listen", "-n", "2", "--state", str(nodes[1].state)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            sent = run_overlay("send", nodes[1].ready()["node_id"], "hello", "overlay",
                               "--state", str(nodes[0].state))
            assert sent.returncode == 0, sent.stderr
            piped = subprocess.run(  # as send --help shows: echo hi | overlay send ID
                overlay_command("send", nodes[1].ready()["node_id"], "--state",
                                str(nodes[0].state)),
                input="hi\nthere\n", capture_output=True, text=True, timeout=60, check=False)
            assert piped.returncode == 0, piped.stderr
            out, _ = listener.communicate(timeout=30)
        finally:
            if listener.poll() is None:
                listener.kill()
        sender = nodes[0].ready()["node_id"][:8]
        assert out.splitlines() == [f"from {sender}: hello overlay", f"from {sender}: hi",
                                    "  there"]


def test_send_to_an_unknown_node_fails_with_one_line() -> None:
    with node_processes() as start:
        [node] = start_line(start, 1)
        result = run_overlay("send", "ffffffff", "x", "--state", str(node.state))
        assert result.returncode == 1
        assert result.stderr.startswith("overlay send: no known node id starts with ffffffff")
        # A large payload: the node refuses while the client is still streaming it.
        big = node.state.parent / "big.bin"
        big.write_bytes(b"\0" * (2 << 20))
        result = run_overlay("send", "ffffffff", "--file", str(big), "--state", str(node.state))
        assert result.returncode == 1
        assert result.stderr.startswith("overlay send: no known node id starts with ffffffff")


def test_send_to_a_node_with_no_route_fails_at_once_not_after_the_channel_timeout() -> None:
    with node_processes() as start:
        [node] = start_line(start, 2)[:1]
        nobody = "ab" * 16
        # The channel's own timeout is 30 s; the fail-fast answer comes from the first
        # UNREACHABLE report, so a 20 s limit tells the two apart without timing anything.
        result = run_overlay("send", nobody, "hello", "--state", str(node.state), timeout=20)
        assert result.returncode == 1
        assert result.stderr == (f"overlay send: node {nobody}: peer unreachable: "
                                 "the overlay has no route to it\n")


def test_bench_transport_measures_overlay_and_plain_trio_in_one_run() -> None:
    result = run_overlay("bench", "transport", "--hops", "0,1", "--count", "300",
                         "--pings", "20", "--handshakes", "5", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["hops"]
    assert [row["relays"] for row in rows] == [0, 1]
    for row in rows:
        for side in ("overlay", "baseline"):
            assert row[side]["goodput_msgs_s"] > 0 and row[side]["rtt_p50_ms"] > 0
        assert row["goodput_ratio"] == round(
            row["overlay"]["goodput_msgs_s"] / row["baseline"]["goodput_msgs_s"], 4)
    assert rows[1]["rtt_p50_added_per_relay_us"] is not None


def test_bench_transport_rejects_bad_hops() -> None:
    result = run_overlay("bench", "transport", "--hops", "0,x")
    assert result.returncode == 2 and "relay counts" in result.stderr


def test_demo_interactive_leaves_you_in_the_chat_as_alice() -> None:
    proc = subprocess.Popen(overlay_command("demo", "--interactive"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("/msg bob are you a bot?\n")
        proc.stdin.flush()
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "bob here: got your 'are you a bot?'" in line:
                break
        assert any("bob here" in line for line in seen), "".join(seen)
        # The scripted part ended with alice and bob punched through: /status says so.
        proc.stdin.write("/status\n")
        proc.stdin.flush()
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.lstrip().startswith("bob:"):
                break
        assert re.search(r"^\s*bob: direct for \d+ s$", seen[-1]), "".join(seen)
        proc.stdin.write("/quit\n")
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_vv_logs_each_packet_and_v_does_not() -> None:
    with node_processes() as start:
        target = start("t", "--listen", "127.0.0.1:0", *FAST)
        target_status = target.ready()
        loud = start("loud", "-vv", "--listen", "127.0.0.1:0", "--connect",
                     target_status["listen"], *FAST)
        quiet = start("quiet", "-v", "--listen", "127.0.0.1:0", "--connect",
                      target_status["listen"], *FAST)
        for node in (loud, quiet):
            node.wait_status(lambda s: bool(s["routes"]), "a route to the target")
            assert run_overlay("ping", target_status["node_id"], "-c", "1",
                               "--state", str(node.state)).returncode == 0
        short = target_status["node_id"][:8]
        assert node.stop() == 0 and loud.stop() == 0
        assert f"overlay.packets: deliver   ECHO_REPLY {short} -> " in loud.log
        assert "overlay.packets" not in quiet.log
