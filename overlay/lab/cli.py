"""``bin/nat-lab`` (``python -m overlay.lab``): build, inspect and tear down the real-NAT lab.

Argument parsing and terminal output only; :mod:`overlay.lab.netns` does the
work.  A :class:`~overlay.lab.errors.LabError` (not root, no such host, a
command that failed) is one line on stderr and exit status 1; a bad argument
is argparse's usage line and status 2; ``exec`` passes the command's own exit
status through.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence

from overlay.lab.errors import LabError
from overlay.lab.nat_types import NatBehaviour, nat_behaviour, set_nat_behaviour
from overlay.lab.netns import Lab, existing_namespaces, processes_in
from overlay.lab.running import add_chat, add_prefix, add_start, run_dir
from overlay.lab.topology import (
    CORE_PUBLIC,
    CORE_WAN,
    MAX_CLIENTS_PER_NAT,
    MAX_NAT_NETWORKS,
    MAX_PUBLIC_CLIENTS,
    MAX_SUPERNODES,
    Host,
    LabConfig,
    host_from_name,
)

PROG = "nat-lab"
DESCRIPTION = """\
Build a lab of network namespaces on this machine (as root) in which the
overlay's server, supernodes and clients run behind real NAT.

Topology (PREFIX defaults to "ovl"; every namespace is PREFIX-HOST):

  server 198.51.100.10   sn1.. 198.51.100.11..   pub1.. 198.51.100.21..
         |                      |                       |
     [ core router: 198.51.100.1 | 203.0.113.254, forwards between its sides ]
               |                                  |
     nat1 WAN 203.0.113.1               nat2 WAN 203.0.113.2    ...
     nat1 LAN 100.64.1.1                nat2 LAN 100.64.2.1
               |                                  |
     nat1-c1 100.64.1.10, nat1-c2 ..    nat2-c1 100.64.2.10 ...

Each NAT router masquerades its LAN behind its WAN address and drops every
connection the WAN side opens: its clients can dial out (the far end sees the
router's WAN address) but cannot be dialled, not even from behind another NAT.
The core even routes 100.64.N.0/24 to router N, so what keeps those clients
undialable is the routers' firewall, as the tests check.
"""
EPILOG = """\
examples:
  bin/nat-lab up                         # 2 NATs x 1 client, 3 supernodes, 1 public client
  bin/nat-lab exec nat1-c1 -- ip route   # run a command on a host
  bin/nat-lab status
  bin/nat-lab nat nat1 --firewall on     # how a NAT router maps ports and filters inbound
  bin/nat-lab start                      # the overlay in it: server, supernodes, clients
  bin/nat-lab chat nat1-c1               # chat as the user nat1-c1, on its host
  bin/nat-lab down

See docs/nat-lab.md for the details and the known limits.
"""


def _count(most: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not 0 <= value <= most:
            raise argparse.ArgumentTypeError(f"must be between 0 and {most}, got {value}")
        return value

    return parse


# --- up ----------------------------------------------------------------------


def add_up(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up", help="build the lab (removing an older one of the same prefix first)",
        description="Build the lab and print its hosts.  An existing lab with the same "
                    "prefix is torn down first.")
    add_prefix(parser)
    parser.add_argument("--nat-networks", type=_count(MAX_NAT_NETWORKS),
                        default=LabConfig.nat_networks, metavar="N",
                        help=f"private networks, each behind its own NAT router "
                             f"(default {LabConfig.nat_networks})")
    parser.add_argument("--clients-per-nat", type=_count(MAX_CLIENTS_PER_NAT),
                        default=LabConfig.clients_per_nat, metavar="N",
                        help=f"clients on each private network "
                             f"(default {LabConfig.clients_per_nat})")
    parser.add_argument("--supernodes", type=_count(MAX_SUPERNODES),
                        default=LabConfig.supernodes, metavar="N",
                        help=f"supernodes on the public side (default {LabConfig.supernodes})")
    parser.add_argument("--public-clients", type=_count(MAX_PUBLIC_CLIENTS),
                        default=LabConfig.public_clients, metavar="N",
                        help=f"reachable clients on the public side "
                             f"(default {LabConfig.public_clients})")
    parser.set_defaults(run=cmd_up)


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(LabConfig(prefix=args.prefix, nat_networks=args.nat_networks,
                        clients_per_nat=args.clients_per_nat, supernodes=args.supernodes,
                        public_clients=args.public_clients))
    seconds = lab.up()
    if lab.cleared_leftovers:
        print(f"(removed the lab {lab.prefix!r} that was already there first)")
    print(host_table(lab.hosts.values()))
    print(f"core router: namespace {lab.core_namespace}, {CORE_PUBLIC} and {CORE_WAN}")
    print(f"lab {lab.prefix!r} up: {len(lab.namespaces())} namespaces in {seconds:.2f} s")
    return 0


def host_table(hosts: Iterable[Host]) -> str:
    """Hosts as aligned columns: name, kind, namespace, address, what the public side sees."""
    rows = [("HOST", "KIND", "NAMESPACE", "ADDRESS", "SEEN FROM OUTSIDE AS")]
    for host in hosts:
        address = host.address
        if host.lan_address is not None:
            address = f"{host.address} (LAN {host.lan_address}/24)"
        rows.append((host.name, host.kind, host.namespace, address, host.public_address))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                     + "  " + row[-1] for row in rows)


# --- down --------------------------------------------------------------------


def add_down(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "down", help="kill everything in the lab and delete it",
        description="Kill every process in the lab's namespaces, delete the namespaces and "
                    "any interface of the lab, and check that nothing is left.")
    add_prefix(parser)
    parser.set_defaults(run=cmd_down)


def cmd_down(args: argparse.Namespace) -> int:
    lab = Lab(LabConfig(prefix=args.prefix))
    existed = len(lab.leftovers())
    seconds = lab.down()  # raises LabError naming what is left, if anything is
    shutil.rmtree(run_dir(lab.prefix), ignore_errors=True)
    what = f"{existed} namespaces and interfaces removed" if existed else "nothing was there"
    print(f"lab {lab.prefix!r} down in {seconds:.2f} s ({what}); nothing is left")
    return 0


# --- status ------------------------------------------------------------------


def add_status(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("status", help="what exists of the lab",
                                   description="List the lab's namespaces and hosts.")
    add_prefix(parser)
    parser.set_defaults(run=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    lab = Lab(LabConfig(prefix=args.prefix))
    left = lab.leftovers()
    if not left:
        print(f"lab {lab.prefix!r} is down: nothing of it exists")
        return 0
    lab = Lab.attach(lab.prefix)
    present = set(existing_namespaces(lab.prefix))
    hosts = [host for host in lab.hosts.values() if host.namespace in present]
    print(host_table(hosts))
    missing = [name for name in lab.namespaces() if name not in present]
    if os.geteuid() == 0:
        per_namespace: dict[str, int] = {}
        for namespace in processes_in(present).values():
            per_namespace[namespace] = per_namespace.get(namespace, 0) + 1
        busy = ", ".join(f"{ns} {n}" for ns, n in sorted(per_namespace.items()))
        print(f"processes: {busy or 'none'}")
    others = [item for item in left if item not in lab.namespaces()]
    state = "up" if not missing else f"incomplete (missing {', '.join(missing)})"
    print(f"lab {lab.prefix!r} is {state}: {len(present)} namespaces"
          + (f"; also {', '.join(others)}" if others else ""))
    return 0


# --- exec --------------------------------------------------------------------


def add_exec(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "exec", help="run a command on a host of the lab",
        description="Run CMD inside HOST's network namespace; the exit status is CMD's.",
        epilog="example: bin/nat-lab exec nat1-c1 -- python3 -c 'print(1)'")
    add_prefix(parser)
    parser.add_argument("host", metavar="HOST",
                        help="server, snK, pubK, natN (a NAT router) or natN-cM")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                        help="the command and its arguments (default: a shell)")
    parser.set_defaults(run=cmd_exec)


def cmd_exec(args: argparse.Namespace) -> int:
    argv: list[str] = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    host_from_name(args.prefix, args.host)  # a name no lab can have: say so, root or not
    lab = Lab.attach(args.prefix)
    command = lab.command(args.host, argv or ["sh"])
    if os.geteuid() != 0:
        raise LabError("the NAT lab needs root")
    sys.stdout.flush()
    try:
        os.execv(command[0], command)  # the command's exit status is ours
    except OSError as exc:
        raise LabError(f"cannot run {command[0]}: {exc.strerror}") from None


# --- nat ---------------------------------------------------------------------


def add_nat(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "nat", help="show or change how a NAT router maps ports and filters inbound",
        description=(
            "Show ROUTER's NAT behaviour, or change it: --mapping easy keeps a connection's "
            "source port (one public port for every destination: hole punching can work), "
            "hard picks a random port per connection; --firewall on drops unsolicited "
            "inbound packets silently (as home routers do), off answers them with a TCP "
            "RST (as built).  Change it before the connections it should govern: existing "
            "mappings are flushed.  docs/nat-lab.md, \"NAT types\", says what to expect of "
            "each pairing."),
        epilog=("examples: bin/nat-lab nat nat1\n"
                "          bin/nat-lab nat nat1 --firewall on   # then punching goes direct\n"
                "          bin/nat-lab nat nat2 --mapping hard  # stays relayed"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_prefix(parser)
    parser.add_argument("router", metavar="ROUTER", help="a NAT router of the lab: natN")
    parser.add_argument("--mapping", choices=("easy", "hard"), default=None,
                        help="the port mapping (default: keep it)")
    parser.add_argument("--firewall", choices=("on", "off"), default=None,
                        help="drop unsolicited inbound packets (default: keep it)")
    parser.set_defaults(run=cmd_nat)


def cmd_nat(args: argparse.Namespace) -> int:
    host_from_name(args.prefix, args.router)  # a name no lab can have: say so, root or not
    if os.geteuid() != 0:
        raise LabError("the NAT lab needs root")
    lab = Lab.attach(args.prefix)
    if not lab.is_up():
        raise LabError(f"lab {args.prefix!r} is not up: run bin/nat-lab up first")
    if lab.host(args.router).kind != "nat-router":
        raise LabError(f"{args.router} is not a NAT router (they are named natN)")
    now = nat_behaviour(lab, args.router)
    if args.mapping is not None or args.firewall is not None:
        wanted = NatBehaviour(args.mapping or now.mapping,
                              firewall=now.firewall if args.firewall is None
                              else args.firewall == "on")
        set_nat_behaviour(lab, args.router, wanted)
        now = nat_behaviour(lab, args.router)
    print(f"{args.router}: {now.mapping} mapping, firewall {'on' if now.firewall else 'off'}")
    return 0


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    add_up, add_down, add_status, add_exec, add_nat, add_start, add_chat,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except LabError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    return result
