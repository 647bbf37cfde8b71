"""``overlay status``: ask a running node, over its control socket, how it is."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import trio

from overlay.net.control import control_request
from overlay.state import control_socket_path, default_state_dir


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "status",
        parents=[common],
        help="show a running node's id, address and neighbours",
        description=(
            "Ask the node running with the given state directory for its node id, listen "
            "address and neighbours (id, address, direction, state, smoothed RTT)."
        ),
    )
    parser.add_argument(
        "--state", type=Path, default=None, metavar="DIR",
        help=f"the node's state directory (default {default_state_dir()})",
    )
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = control_socket_path(args.state or default_state_dir())
    status = trio.run(control_request, path, "status")
    if args.json:
        json.dump(status, sys.stdout, indent=2)
        print()
    else:
        print(render(status))
    return 0


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.3f} ms"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in table]


def render(status: dict[str, Any]) -> str:
    if status.get("kind") == "directory-server":
        return render_server(status)
    lines = [
        f"node        {status['node_id']}",
        f"listen      {status['listen'] or '-'}",
        f"uptime      {status['uptime_s']:.1f} s",
        f"neighbours  {len(status['neighbours'])}",
    ]
    rows = status["neighbours"] + status["pending"]
    if rows:
        lines.append("")
        lines += _table(
            ("NODE ID", "ADDRESS", "DIR", "STATE", "SRTT", "RTTVAR", "MISSED"),
            [(row["id"] or "(handshaking)", row["address"], row["direction"], row["state"],
              _ms(row["srtt_ms"]), _ms(row["rttvar_ms"]), str(row["missed_pongs"]))
             for row in rows],
        )
    lines += _render_down(status.get("configured") or [])
    role = status.get("role")
    if role:
        lines += ["", *_render_role(role)]
    attached = status.get("attached_clients") or []
    if role and role.get("role") == "supernode":
        forwarding = status.get("forwarding") or {}
        lines += [f"advertise   {role['advertise']}",
                  f"mesh        {len(role['mesh_dialled'])} supernodes dialled, "
                  f"{len(role['candidates'])} measured",
                  f"load        {len(attached)} edge clients attached, "
                  f"{forwarding.get('forwarded', 0)} packets relayed"]
    elif attached:
        lines += ["", f"edge clients attached  {len(attached)}"]
    routes = status.get("routes", [])
    lines += ["", f"routes      {sum(1 for r in routes if r['next_hop'])}"]
    if routes:
        lines.append("")
        lines += _table(
            ("DESTINATION", "NEXT HOP", "METRIC", "SEQNO"),
            [(r["destination"], (r["next_hop"] or "-")[:8],
              "unreachable" if r["metric_us"] is None else f"{r['metric_us'] / 1000:.3f} ms",
              str(r["seqno"])) for r in routes],
        )
    return "\n".join(lines)


def render_server(status: dict[str, Any]) -> str:
    """A directory server: what it is, where, and how loaded it is."""
    cluster = " (one of several processes on it)" if status["cluster"] else ""
    return "\n".join([
        f"directory server  {status['node_id']}",
        f"listen            {status['listen']}",
        f"key               {status['key']}",
        f"database          {status['database']}{cluster}",
        f"uptime            {status['uptime_s']:.1f} s",
        "",
        f"connections       {status['connections']} ({status['sessions']} logged in)",
        f"users online      {status['users_online']}",
        f"supernodes        {status['supernodes']}",
        f"login queue       {status['login_queue']} now, peak {status['login_queue_peak']}, "
        f"{status['logins_shed']} shed with 429",
    ])


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def _render_down(configured: list[dict[str, Any]]) -> list[str]:
    """Configured neighbours that are not linked: since when, why, and the next try."""
    down = [c for c in configured if c["state"] != "linked"]
    if not down:
        return []
    rows: list[tuple[str, ...]] = [
        (str(c["address"]), str(c["id"] or "?")[:8], str(c["state"]), _seconds(c["for_s"]),
         "now" if c["next_attempt_in_s"] is None else f"in {_seconds(c['next_attempt_in_s'])}",
         str(c["failures"]), str(c["last_error"] or "-")) for c in down]
    return ["", f"not linked  {len(down)} of {len(configured)} configured",
            "", *_table(("ADDRESS", "NODE ID", "STATE", "FOR", "REDIAL", "FAILURES",
                         "LAST ERROR"), rows)]


def _render_role(role: dict[str, Any]) -> list[str]:
    """The edge client's or supernode's own view: home, reachability, conversations."""
    lines = [f"role        {role['role']}"]
    for key, label in (("username", "user"), ("home", "home"), ("standby", "standby"),
                       ("reachability", "reachable"), ("directory", "directory")):
        if role.get(key) is not None:
            value = role[key]
            if key == "reachability":
                value = f"{'yes' if role.get('reachable') else 'no'} ({value})"
            lines.append(f"{label:<12}{value}")
    punch = role.get("punch")
    if punch:
        seen = ", ".join(f"{who} sees {address}" for who, address in punch["observed"].items())
        lines.append(f"{'nat':<12}{punch['mapping']} mapping"
                     f"{f' ({seen})' if seen else ''}, punching from port "
                     f"{punch['outgoing_port']}")
    conversations = role.get("conversations") or []
    if conversations:
        lines.append("")
        lines += _table(
            ("CONVERSATION", "PATH", "SINCE", "VIA SUPERNODES", "PUNCH"),
            [(c.get("username") or c["peer"][:8], c["path"], _since(c.get("since_s")),
              " -> ".join(v[:8] for v in c["via"]) or "-", _punch(c.get("punch")))
             for c in conversations],
        )
    return lines


def _since(seconds: float | None) -> str:
    """How long a conversation has been on its path, e.g. ``12 s`` or ``3 min``."""
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _punch(punch: dict[str, Any] | None) -> str:
    """Hole punching towards one peer: its state and attempts so far."""
    if punch is None:
        return "-"
    tries = punch["attempts"]
    return f"{punch['state']}, {tries} attempt{'s' if tries != 1 else ''}"
