"""The real-NAT lab: real namespaces, real iptables, real TCP between hosts.

What these prove: a client behind NAT reaches the public side and is seen
there as its router's WAN address; nobody outside its LAN can dial it, not
the server and not a client behind another NAT; the public hosts reach each
other both ways; and teardown leaves nothing behind, even after a failed
setup.  Dials are a few lines of Python run inside the hosts.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from overlay.lab import Host, Lab, LabConfig, LabError
from overlay.lab.netns import processes_in
from overlay.lab.topology import IFNAMSIZ, core_port, lan_bridge, lan_port, plan
from tests.lab.conftest import lab_prefix
from tests.procs import wait_until

PREFIX = lab_prefix("ovt")  # the module's lab; a developer's own lab ("ovl") is left alone
SCRATCH = lab_prefix("ovtx")  # labs that single tests build and tear down
PORT = 7400
WAIT = 20.0  # bound on waits that should succeed at once
REFUSED_AFTER = 1.5  # how long a dial that must fail is given
NAT_LAB = Path(__file__).resolve().parents[2] / "bin" / "nat-lab"

LISTEN = """
import socket, sys
host, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with socket.create_server((host, port)) as server:
    server.settimeout(wait)
    print("listening", flush=True)
    try:
        conn, peer = server.accept()
    except TimeoutError:
        print("nobody came", flush=True)
        sys.exit(3)
    with conn:
        conn.sendall(f"hello {peer[0]}".encode())
        print("peer", peer[0], flush=True)
"""

DIAL = """
import socket, sys
host, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    with socket.create_connection((host, port), timeout=wait) as conn:
        print(conn.recv(100).decode(), flush=True)
except TimeoutError:
    print("timed out", flush=True)
    sys.exit(2)
except OSError as exc:
    print(f"failed: {exc}", flush=True)
    sys.exit(1)
"""


@pytest.fixture(scope="module")
def lab(netns_required: None, lab_timings: list[str]) -> Iterator[Lab]:
    lab = Lab(LabConfig(prefix=PREFIX, nat_networks=2, clients_per_nat=2, supernodes=2,
                        public_clients=1))
    try:
        setup = lab.up()
        print(f"lab {PREFIX}: setup {setup:.3f} s")
        yield lab
    finally:
        teardown = lab.down()
        print(f"lab {PREFIX}: teardown {teardown:.3f} s")
        lab_timings.append(f"{PREFIX} ({len(lab.namespaces())} namespaces): setup "
                           f"{lab.setup_seconds or 0:.3f} s, teardown {teardown:.3f} s")


@contextmanager
def listening(lab: Lab, host: str, wait: float = WAIT) -> Iterator[subprocess.Popen[bytes]]:
    """A one-shot TCP listener on ``host``:PORT; ready when this yields."""
    proc = lab.popen(host, [sys.executable, "-c", LISTEN, lab.host(host).address, str(PORT),
                            str(wait)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], WAIT)
        line = proc.stdout.readline().decode().strip() if ready else "(nothing)"
        assert line == "listening", f"listener on {host}: {line}; {proc.stderr!r}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)


def listener_output(proc: subprocess.Popen[bytes], *, stop: bool = False) -> str:
    """What the listener printed after "listening"; ``stop`` it first if nobody is to come."""
    if stop:
        proc.kill()
    out, _ = proc.communicate(timeout=WAIT)
    return out.decode()


def dial(lab: Lab, source: str, target: str,
         wait: float = WAIT) -> subprocess.CompletedProcess[str]:
    """Dial ``target``:PORT from ``source``: exit 0 and the greeting, 2 timed out, 1 refused."""
    argv = [sys.executable, "-c", DIAL, lab.host(target).address, str(PORT), str(wait)]
    return lab.run(source, argv, timeout=wait + WAIT)


# --- connectivity -------------------------------------------------------------


@pytest.mark.netns
def test_every_nat_client_reaches_the_server_as_its_routers_wan_address(lab: Lab) -> None:
    clients = lab.hosts_of_kind("nat-client")
    assert len(clients) == 4
    for client in clients:
        with listening(lab, "server") as listener:
            result = dial(lab, client.name, "server")
            assert result.returncode == 0, f"{client.name}: {result.stdout}{result.stderr}"
            router = lab.host(f"nat{client.nat}")
            assert client.public_address == router.address
            assert result.stdout.strip() == f"hello {router.address}"
            assert listener_output(listener).strip() == f"peer {router.address}"


@pytest.mark.netns
def test_a_nat_client_reaches_a_supernode_too(lab: Lab) -> None:
    with listening(lab, "sn2") as listener:
        result = dial(lab, "nat2-c2", "sn2")
        assert result.returncode == 0, result.stdout + result.stderr
        assert listener_output(listener).strip() == "peer 203.0.113.2"


@pytest.mark.netns
def test_the_server_cannot_dial_a_nat_client(lab: Lab) -> None:
    with listening(lab, "nat1-c1") as listener:
        result = dial(lab, "server", "nat1-c1", wait=REFUSED_AFTER)
        # Dropped by the NAT router's firewall, silently: the dial times out.
        assert (result.returncode, result.stdout.strip()) == (2, "timed out")
        assert "peer" not in listener_output(listener, stop=True)


@pytest.mark.netns
def test_a_client_behind_one_nat_cannot_dial_a_client_behind_another(lab: Lab) -> None:
    with listening(lab, "nat2-c1") as listener:
        result = dial(lab, "nat1-c1", "nat2-c1", wait=REFUSED_AFTER)
        assert (result.returncode, result.stdout.strip()) == (2, "timed out")
        assert "peer" not in listener_output(listener, stop=True)


@pytest.mark.netns
def test_clients_on_the_same_private_network_reach_each_other_directly(lab: Lab) -> None:
    with listening(lab, "nat1-c2") as listener:
        result = dial(lab, "nat1-c1", "nat1-c2")
        assert result.returncode == 0, result.stdout + result.stderr
        assert listener_output(listener).strip() == f"peer {lab.host('nat1-c1').address}"


@pytest.mark.netns
@pytest.mark.parametrize(("source", "target"), [("pub1", "server"), ("server", "pub1"),
                                                ("sn1", "pub1"), ("pub1", "sn2")])
def test_public_hosts_dial_each_other_both_ways(lab: Lab, source: str, target: str) -> None:
    with listening(lab, target) as listener:
        result = dial(lab, source, target)
        assert result.returncode == 0, result.stdout + result.stderr
        assert listener_output(listener).strip() == f"peer {lab.host(source).address}"


@pytest.mark.netns
def test_every_host_has_loopback_and_a_default_route(lab: Lab) -> None:
    for host in lab.hosts.values():
        routes = lab.run(host, ["ip", "-4", "route", "show", "default"], check=True).stdout
        assert routes.startswith("default via "), f"{host.name}: {routes!r}"
        loopback = lab.run(host, ["ip", "-4", "-br", "addr", "show", "lo"], check=True).stdout
        assert "127.0.0.1/8" in loopback and "UNKNOWN" in loopback, f"{host.name}: {loopback}"


# --- life cycle ----------------------------------------------------------------


def _scratch(**sizes: int) -> Lab:
    return Lab(LabConfig(prefix=SCRATCH, **sizes))


@pytest.mark.netns
def test_down_kills_every_process_and_leaves_nothing(netns_required: None,
                                                     lab_timings: list[str]) -> None:
    lab = _scratch(nat_networks=1, supernodes=1, public_clients=0)
    outsider: subprocess.Popen[bytes] | None = None
    try:
        setup = lab.up()
        ours = [lab.popen("server", ["sleep", "60"]),
                # ignores SIGTERM, so down() has to escalate to SIGKILL
                lab.popen("nat1-c1", ["sh", "-c", "trap '' TERM; echo ready; exec sleep 60"],
                          stdout=subprocess.PIPE)]
        stubborn = ours[1].stdout
        assert stubborn is not None
        assert select.select([stubborn], [], [], WAIT)[0] and stubborn.readline() == b"ready\n"
        # started behind the lab's back, as `bin/nat-lab exec` would
        outsider = subprocess.Popen(["ip", "netns", "exec", lab.host("sn1").namespace,
                                     "sleep", "60"])
        namespaces = lab.namespaces()
        wait_until(lambda: len(processes_in(namespaces)) >= 3, "the three sleepers")
    finally:
        teardown = lab.down()
        if outsider is not None:
            outsider.wait(timeout=WAIT)
    print(f"lab {SCRATCH}: setup {setup:.3f} s, teardown {teardown:.3f} s")
    lab_timings.append(f"{SCRATCH} (3 busy processes, one ignoring SIGTERM): "
                       f"setup {setup:.3f} s, teardown {teardown:.3f} s")
    assert lab.leftovers() == []
    assert all(proc.poll() is not None for proc in ours)
    assert ours[1].returncode == -9  # SIGTERM was ignored: down() escalated
    stubborn.close()
    assert outsider.returncode is not None
    assert not processes_in(namespaces)
    assert lab.down() >= 0  # idempotent
    assert lab.leftovers() == []


@pytest.mark.netns
def test_up_replaces_leftovers_of_the_same_prefix(netns_required: None) -> None:
    first = _scratch(nat_networks=3, clients_per_nat=2)
    second = _scratch(nat_networks=1, supernodes=1, public_clients=0)
    try:
        first.up()
        assert not first.cleared_leftovers
        second.up()
        assert second.cleared_leftovers
        assert sorted(second.leftovers()) == sorted(second.namespaces())
        found = Lab.attach(SCRATCH)
        assert found.config == second.config and found.is_up()
    finally:
        second.down()
    assert first.leftovers() == []


@pytest.mark.netns
def test_a_failed_up_leaves_nothing_behind(netns_required: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Lab, ip: str, host: Host) -> None:
        raise LabError("the cable for the NAT client is missing")

    monkeypatch.setattr(Lab, "_add_nat_client", broken)
    lab = _scratch(nat_networks=1)
    try:
        with pytest.raises(LabError, match="cable"):
            lab.up()
        assert lab.leftovers() == []
    finally:
        lab.down()


# --- the plan (no root needed) -----------------------------------------------------


def test_names_and_addresses_of_the_biggest_lab_fit() -> None:
    config = LabConfig(prefix="abcdefgh", nat_networks=50, clients_per_nat=100, supernodes=10,
                       public_clients=100)
    hosts = plan(config)
    addresses = [host.address for host in hosts.values() if host.kind != "nat-router"]
    assert len(set(addresses)) == len(addresses) == len(hosts) - 50
    assert hosts["server"].address == "198.51.100.10"
    assert hosts["sn10"].address == "198.51.100.20"
    assert hosts["pub1"].address == "198.51.100.21"
    assert (hosts["nat50"].address, hosts["nat50"].lan_address) == ("203.0.113.50", "100.64.50.1")
    assert hosts["nat50-c100"].address == "100.64.50.109"
    assert hosts["nat50-c100"].public_address == "203.0.113.50"
    names = [core_port(config.prefix, host) for host in hosts.values() if host.kind != "nat-client"]
    names += [lan_port(config.prefix, hosts["nat50-c100"]), lan_bridge(config.prefix)]
    assert max(len(name) for name in names) <= IFNAMSIZ


@pytest.mark.parametrize("config", [{"prefix": "ovl-2"}, {"prefix": "Ovl"}, {"prefix": "toolongpx"},
                                    {"supernodes": 11}, {"nat_networks": -1}])
def test_bad_configs_are_refused_in_one_line(config: dict[str, object]) -> None:
    with pytest.raises(LabError) as caught:
        LabConfig(**config)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_host_lookup_errors_name_the_problem() -> None:
    lab = Lab(LabConfig(prefix="ovq"))
    with pytest.raises(LabError, match="no such host 'nosuchhost'"):
        lab.host("nosuchhost")
    with pytest.raises(LabError, match="no host 'sn7' in lab 'ovq'"):
        lab.host("sn7")


# --- bin/nat-lab ---------------------------------------------------------------------


def nat_lab(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    # OVERLAY_NETNS_INSTALL=0: a test never apt-get installs anything.
    env = {**os.environ, "OVERLAY_NETNS_INSTALL": "0"}
    return subprocess.run([str(NAT_LAB), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


def test_nat_lab_help_describes_the_topology() -> None:
    result = nat_lab("--help")
    assert result.returncode == 0, result.stderr
    for word in ("up", "down", "status", "exec", "198.51.100.10", "203.0.113.1", "100.64.1.10"):
        assert word in result.stdout


def test_nat_lab_exec_on_an_unknown_host_is_one_line() -> None:
    result = nat_lab("exec", "nosuchhost", "--", "true")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no such host 'nosuchhost'" in result.stderr
    assert "Traceback" not in result.stderr


def test_nat_lab_bad_arguments_exit_2() -> None:
    result = nat_lab("up", "--supernodes", "many")
    assert result.returncode == 2 and "not a whole number" in result.stderr


@pytest.mark.netns
def test_nat_lab_up_exec_status_down(netns_required: None) -> None:
    prefix = lab_prefix("ovtc")
    try:
        up = nat_lab("up", "--prefix", prefix, "--nat-networks", "1", "--supernodes", "1",
                     "--public-clients", "0")
        assert up.returncode == 0, up.stderr
        assert "nat1-c1" in up.stdout and "100.64.1.10" in up.stdout and " s" in up.stdout
        ran = nat_lab("exec", "--prefix", prefix, "nat1-c1", "--", "sh", "-c", "exit 7")
        assert ran.returncode == 7
        status = nat_lab("status", "--prefix", prefix)
        assert status.returncode == 0 and f"lab '{prefix}' is up" in status.stdout
        missing = nat_lab("exec", "--prefix", prefix, "sn2", "--", "true")
        assert missing.returncode == 1 and "no host 'sn2'" in missing.stderr
    finally:
        down = nat_lab("down", "--prefix", prefix)
    assert down.returncode == 0 and "nothing is left" in down.stdout, down.stderr
    assert Lab(LabConfig(prefix=prefix)).leftovers() == []
