"""Building and tearing down the real-NAT lab with network namespaces, veth pairs and iptables.

Theory of operation.  Every host is a network namespace named
``PREFIX-HOST`` with one interface, ``eth0``, cabled (a veth pair) to a
bridge.  The public hosts hang off the bridge ``PREFIX-pub`` in the core
router's namespace ``PREFIX-core``; the NAT routers' WAN sides (``wan0``)
off its bridge ``PREFIX-wan``; the core forwards between the two.  Each NAT
router owns a bridge ``PREFIX-lan`` for its clients, forwards, masquerades
what leaves through ``wan0`` and drops anything arriving from the WAN that is
not a reply (see :meth:`Lab._add_nat_router`).  The core even routes the
private networks to their routers, as a careless ISP might: so what keeps a
private host undialable in the tests is the NAT router's firewall, not a
missing route.

Every interface is created directly inside its namespace (``ip link add ...
netns ...``): nothing ever appears in the root namespace, and deleting the
namespaces deletes everything.  :meth:`Lab.down` first kills every process
still inside them (a namespace with a process in it outlives its name), then
deletes them; it works on whatever exists, so it also cleans up after an
:meth:`Lab.up` that failed halfway or a lab another process built.

Only ``ip``, ``iptables`` and ``sysctl`` are run (as subprocesses, each with a
timeout); the standard library does the rest.

The module is long for one job: a lab's namespaces, links, addresses and NAT
rules are built and torn down together, in an order each step depends on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from overlay.lab.errors import LabError
from overlay.lab.topology import (
    CORE,
    CORE_PUBLIC,
    CORE_WAN,
    HOST_IFACE,
    PRIVATE_NET,
    ROUTER_WAN_IFACE,
    Host,
    LabConfig,
    config_from_namespaces,
    core_port,
    host_from_name,
    lan_bridge,
    lan_port,
    namespace_of,
    plan,
    public_bridge,
    wan_bridge,
)

NETNS_DIR = Path("/run/netns")  # where `ip netns add` mounts named namespaces
COMMAND_TIMEOUT = 10.0  # one ip/iptables/sysctl command; they take milliseconds
TERM_GRACE = 1.0  # how long processes get between SIGTERM and SIGKILL in down()
KILL_WAIT = 3.0  # how long down() waits for SIGKILLed processes to go
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"  # root's tools, even when PATH lacks them
_INSTALL_HINT = {
    "ip": "iproute2",
    "iptables": "iptables",
}


def _tool(name: str) -> str:
    """The full path of a system tool, or LabError saying how to install it."""
    path = shutil.which(name) or shutil.which(name, path=_SBIN)
    if path is None:
        package = _INSTALL_HINT.get(name, name)
        raise LabError(f"{name} not found: run bin/nat-lab (it installs it) "
                       f"or apt-get install {package}")
    return path


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _command(argv: Sequence[str], *, stdin_text: str | None = None,
             timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a setup command; its stdout, or LabError with the command and its stderr."""
    shown = " ".join([os.path.basename(argv[0]), *argv[1:]])
    try:
        result = subprocess.run(argv, input=stdin_text, capture_output=True, text=True,
                                timeout=timeout, check=False)
    except FileNotFoundError:
        raise LabError(f"{shown}: {argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{shown}: no answer within {timeout:g} s") from None
    if result.returncode != 0:
        detail = _one_line(result.stderr) or f"exit status {result.returncode}"
        raise LabError(f"{shown} failed: {detail}")
    return result.stdout


def _check_privileges() -> None:
    if not sys.platform.startswith("linux"):
        raise LabError("the NAT lab needs Linux network namespaces")
    if os.geteuid() != 0:
        raise LabError("the NAT lab needs root")


def available() -> str | None:
    """None when the lab can run here, else the reason it cannot (for tests to skip on).

    Creates and deletes a scratch namespace (``ovl_probe_PID``: the underscore
    keeps it outside every lab's prefix) and runs iptables inside it, so a
    kernel without namespaces or NAT support is caught here and not halfway
    through :meth:`Lab.up`.
    """
    try:
        _check_privileges()
        ip, iptables = _tool("ip"), _tool("iptables")
        probe = f"ovl_probe_{os.getpid()}"
        _command([ip, "netns", "add", probe])
        try:
            _command([ip, "netns", "exec", probe, iptables, "-t", "nat", "-L", "-n"])
        finally:
            _command([ip, "netns", "delete", probe])
    except LabError as exc:
        return str(exc)
    return None


def existing_namespaces(prefix: str) -> list[str]:
    """The named namespaces of lab ``prefix`` (readable without root)."""
    try:
        names = os.listdir(NETNS_DIR)
    except OSError:
        return []
    return sorted(name for name in names if name.startswith(f"{prefix}-"))


def _root_interfaces(prefix: str) -> list[str]:
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return []
    return sorted(name for name in names if name.startswith(f"{prefix}-"))


def processes_in(namespaces: Iterable[str]) -> dict[int, str]:
    """Every live process in the given namespaces: pid -> namespace (what ``ip netns pids`` does).

    Compares each process's network namespace inode with the namespaces'
    bind mounts under /run/netns; zombies have no namespace any more and do
    not count.  Needs root to see other users' processes.
    """
    wanted: dict[tuple[int, int], str] = {}
    for name in namespaces:
        try:
            st = os.stat(NETNS_DIR / name)
        except OSError:
            continue
        wanted[(st.st_dev, st.st_ino)] = name
    found: dict[int, str] = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone, a zombie, or not ours to look at
        namespace = wanted.get((st.st_dev, st.st_ino))
        if namespace is not None:
            found[int(entry)] = namespace
    return found


class Lab:
    """A real-NAT network of namespaces: a server, supernodes, public and NAT-ed clients.

    ``with Lab(LabConfig(prefix="ovt")) as lab:`` builds it and always tears
    it down; ``lab.popen("nat1-c1", [...])`` runs a program on a host.
    :attr:`setup_seconds` and :attr:`teardown_seconds` record how long the last
    :meth:`up` and :meth:`down` took.
    """

    def __init__(self, config: LabConfig | None = None) -> None:
        self.config = config if config is not None else LabConfig()
        self.prefix = self.config.prefix
        self.core_namespace = namespace_of(self.prefix, CORE)
        self._hosts = MappingProxyType(plan(self.config))
        self._procs: list[subprocess.Popen[bytes]] = []
        self.setup_seconds: float | None = None
        self.teardown_seconds: float | None = None
        self.cleared_leftovers = False  # whether the last up() removed an older lab first

    @classmethod
    def attach(cls, prefix: str = "ovl") -> Lab:
        """The lab ``prefix`` that is up now (built by this or another process), from its names."""
        namespaces = existing_namespaces(prefix)
        if not namespaces:
            raise LabError(f"lab {prefix!r} is not up (bin/nat-lab up --prefix {prefix})")
        return cls(config_from_namespaces(prefix, namespaces))

    def __repr__(self) -> str:
        return f"Lab({self.config!r})"

    # --- hosts ---------------------------------------------------------------

    @property
    def hosts(self) -> Mapping[str, Host]:
        """Every host by name, in order: server, snK, pubK, natN (routers), natN-cM."""
        return self._hosts

    def host(self, name: str | Host) -> Host:
        """The host called ``name``; LabError naming the hosts there are if it is not one."""
        if isinstance(name, Host):
            name = name.name
        host = self._hosts.get(name)
        if host is None:
            host_from_name(self.prefix, name)  # "no such host" for a name no lab has
            raise LabError(f"no host {name!r} in lab {self.prefix!r} "
                           f"(it has {', '.join(self._hosts)})")
        return host

    def hosts_of_kind(self, kind: str) -> list[Host]:
        return [host for host in self._hosts.values() if host.kind == kind]

    def namespaces(self) -> list[str]:
        """Every namespace the lab consists of: the core router's, then each host's."""
        return [self.core_namespace, *(host.namespace for host in self._hosts.values())]

    # --- running programs on hosts ----------------------------------------------

    def command(self, host: str | Host, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside ``host``'s namespace (``ip netns exec NS ...``)."""
        if not argv:
            raise LabError("no command to run")
        return [_tool("ip"), "netns", "exec", self.host(host).namespace, *argv]

    def popen(self, host: str | Host, argv: Sequence[str],
              **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` on ``host``; keyword arguments go to :class:`subprocess.Popen`.

        Streams are bytes (pass no ``text``/``encoding``).  The process runs
        until it exits or :meth:`down` kills it; its pid is the program's own
        (``ip netns exec`` execs it), so ``terminate()`` reaches the program.
        """
        for key in ("text", "encoding", "errors", "universal_newlines"):
            if kwargs.get(key):
                raise TypeError(f"Lab.popen streams are bytes; {key}= is not supported")
        proc: subprocess.Popen[bytes] = subprocess.Popen(self.command(host, argv), **kwargs)
        self._procs = [p for p in self._procs if p.poll() is None]
        self._procs.append(proc)
        return proc

    def run(self, host: str | Host, argv: Sequence[str], timeout: float = 30.0, *,
            check: bool = False, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``host`` to completion, output captured as text.

        LabError if it runs longer than ``timeout`` seconds (it is killed),
        or, with ``check``, if it exits with a non-zero status.
        """
        argv = list(argv)
        try:
            result = subprocess.run(self.command(host, argv), capture_output=True, text=True,
                                    timeout=timeout, check=False, input=input)
        except subprocess.TimeoutExpired:
            raise LabError(f"{' '.join(argv)} on {self.host(host).name}: "
                           f"still running after {timeout:g} s (killed)") from None
        if check and result.returncode != 0:
            detail = _one_line(result.stderr) or f"exit status {result.returncode}"
            raise LabError(f"{' '.join(argv)} on {self.host(host).name} failed: {detail}")
        return result

    # --- life cycle ------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    def leftovers(self) -> list[str]:
        """What of this lab's prefix exists: namespace names, then ``iface:NAME`` in the root ns."""
        return [*existing_namespaces(self.prefix),
                *(f"iface:{name}" for name in _root_interfaces(self.prefix))]

    def is_up(self) -> bool:
        """Whether every namespace of the plan exists (not whether it works)."""
        present = set(existing_namespaces(self.prefix))
        return all(name in present for name in self.namespaces())

    def up(self) -> float:
        """Build the lab (after removing any leftovers of this prefix); the seconds it took.

        If building fails, whatever was built is torn down again before the
        error propagates: a failed up() leaves nothing behind.
        """
        _check_privileges()
        ip, iptables = _tool("ip"), _tool("iptables")
        began = time.monotonic()
        self.cleared_leftovers = bool(self.leftovers())
        if self.cleared_leftovers:
            self.down()
        try:
            self._build(ip, iptables)
        except BaseException as exc:
            try:
                self.down()
            except LabError as cleanup:
                exc.add_note(f"and tearing the half-built lab down failed too: {cleanup}")
            raise
        self.setup_seconds = time.monotonic() - began
        return self.setup_seconds

    def down(self) -> float:
        """Kill every process in the lab, delete its namespaces and interfaces; the seconds it took.

        Idempotent, bounded (a few seconds at worst), and it acts on what
        exists under this prefix, not on what this object built.  LabError if
        something survives (a process that ignores SIGKILL, a namespace or an
        interface that cannot be deleted), after trying everything else.
        """
        began = time.monotonic()
        problems: list[str] = []
        namespaces = existing_namespaces(self.prefix)
        interfaces = _root_interfaces(self.prefix)
        self._reap()
        if namespaces or interfaces or self._procs:
            _check_privileges()
            survivors = self._kill_processes(namespaces)
            if survivors:
                problems.append(f"processes {sorted(survivors)} survived SIGKILL")
            ip = _tool("ip")
            for namespace in namespaces:
                try:
                    _command([ip, "netns", "delete", namespace])
                except LabError as exc:
                    problems.append(str(exc))
            for name in interfaces:
                try:
                    _command([ip, "link", "delete", name])
                except LabError as exc:
                    if name in _root_interfaces(self.prefix):  # deleting its peer may take it
                        problems.append(str(exc))
        self.teardown_seconds = time.monotonic() - began
        left = self.leftovers()
        if left:
            problems.append(f"still there: {', '.join(left)}")
        if problems:
            raise LabError(f"tearing down lab {self.prefix!r}: {'; '.join(problems)}")
        return self.teardown_seconds

    def _kill_processes(self, namespaces: list[str]) -> set[int]:
        """SIGTERM everything in the namespaces, SIGKILL what stays; the pids that survive."""

        def alive() -> set[int]:
            self._reap()
            return set(processes_in(namespaces)) | {p.pid for p in self._procs}

        for sig, wait in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, KILL_WAIT)):
            pids = alive()
            if not pids:
                return pids
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                time.sleep(0.01)
                pids = alive()
        return alive()

    def _reap(self) -> None:
        self._procs = [p for p in self._procs if p.poll() is None]

    # --- building ---------------------------------------------------------------

    def _build(self, ip: str, iptables: str) -> None:
        for namespace in self.namespaces():
            _command([ip, "netns", "add", namespace])
            _command([ip, "-n", namespace, "link", "set", "lo", "up"])
        self._add_core(ip)
        for host in self._hosts.values():
            if host.is_public:
                self._add_public_host(ip, host)
            elif host.kind == "nat-router":
                self._add_nat_router(ip, iptables, host)
        for host in self.hosts_of_kind("nat-client"):
            self._add_nat_client(ip, host)

    def _sysctl(self, ip: str, namespace: str, key: str, value: str) -> None:
        sysctl = shutil.which("sysctl") or shutil.which("sysctl", path=_SBIN)
        if sysctl is not None:
            _command([ip, "netns", "exec", namespace, sysctl, "-qw", f"{key}={value}"])
        else:  # minimal images lack procps: write the /proc file, the same thing
            path = "/proc/sys/" + key.replace(".", "/")
            _command([ip, "netns", "exec", namespace, "tee", path], stdin_text=value + "\n")

    def _add_core(self, ip: str) -> None:
        """The core router: a bridge for the public hosts, one for the NAT routers' WAN sides."""
        core = self.core_namespace
        for bridge, address in ((public_bridge(self.prefix), f"{CORE_PUBLIC}/24"),
                                (wan_bridge(self.prefix), f"{CORE_WAN}/24")):
            _command([ip, "-n", core, "link", "add", bridge, "type", "bridge",
                      "forward_delay", "0"])
            _command([ip, "-n", core, "addr", "add", address, "dev", bridge])
            _command([ip, "-n", core, "link", "set", bridge, "up"])
        self._sysctl(ip, core, "net.ipv4.ip_forward", "1")

    def _cable(self, ip: str, host: Host, host_iface: str, *, switch_namespace: str,
               port: str, bridge: str) -> None:
        """A veth pair from ``host`` (``host_iface``) to ``bridge`` in ``switch_namespace``."""
        _command([ip, "link", "add", host_iface, "netns", host.namespace, "type", "veth",
                  "peer", "name", port, "netns", switch_namespace])
        _command([ip, "-n", switch_namespace, "link", "set", port, "master", bridge, "up"])
        _command([ip, "-n", host.namespace, "link", "set", host_iface, "up"])

    def _address(self, ip: str, host: Host, iface: str, address: str, gateway: str) -> None:
        _command([ip, "-n", host.namespace, "addr", "add", f"{address}/24", "dev", iface])
        _command([ip, "-n", host.namespace, "route", "add", "default", "via", gateway])

    def _add_public_host(self, ip: str, host: Host) -> None:
        self._cable(ip, host, HOST_IFACE, switch_namespace=self.core_namespace,
                    port=core_port(self.prefix, host), bridge=public_bridge(self.prefix))
        self._address(ip, host, HOST_IFACE, host.address, CORE_PUBLIC)

    def _add_nat_router(self, ip: str, iptables: str, host: Host) -> None:
        """WAN side on the core's WAN bridge, a LAN bridge, forwarding, NAT and the firewall.

        The firewall is a home router's: the FORWARD chain drops by default,
        accepts anything from the LAN and, from the WAN, only replies to
        connections the LAN opened (conntrack ESTABLISHED,RELATED);
        MASQUERADE rewrites the LAN's source addresses to the WAN address.
        """
        assert host.nat is not None and host.lan_address is not None
        self._cable(ip, host, ROUTER_WAN_IFACE, switch_namespace=self.core_namespace,
                    port=core_port(self.prefix, host), bridge=wan_bridge(self.prefix))
        self._address(ip, host, ROUTER_WAN_IFACE, host.address, CORE_WAN)
        lan = lan_bridge(self.prefix)
        ns = host.namespace
        _command([ip, "-n", ns, "link", "add", lan, "type", "bridge", "forward_delay", "0"])
        _command([ip, "-n", ns, "addr", "add", f"{host.lan_address}/24", "dev", lan])
        _command([ip, "-n", ns, "link", "set", lan, "up"])
        self._sysctl(ip, ns, "net.ipv4.ip_forward", "1")
        rules = (
            ["-t", "nat", "-A", "POSTROUTING", "-o", ROUTER_WAN_IFACE, "-j", "MASQUERADE"],
            ["-A", "FORWARD", "-i", ROUTER_WAN_IFACE, "-m", "conntrack",
             "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
            ["-A", "FORWARD", "-i", lan, "-j", "ACCEPT"],
            ["-P", "FORWARD", "DROP"],
        )
        for rule in rules:
            _command([ip, "netns", "exec", ns, iptables, "-w", "5", *rule])
        # The careless ISP: the core routes this private network to its router.
        _command([ip, "-n", self.core_namespace, "route", "add",
                  f"{PRIVATE_NET}.{host.nat}.0/24", "via", host.address])

    def _add_nat_client(self, ip: str, host: Host) -> None:
        router = self.host(f"nat{host.nat}")
        assert router.lan_address is not None
        self._cable(ip, host, HOST_IFACE, switch_namespace=router.namespace,
                    port=lan_port(self.prefix, host), bridge=lan_bridge(self.prefix))
        self._address(ip, host, HOST_IFACE, host.address, router.lan_address)
