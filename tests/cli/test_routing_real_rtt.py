"""Routing on real round trips: ``overlay node`` processes joined by delay links.

Five links with real delay (user-space forwarders on 127.0.0.1, see
:mod:`tests.delay_link`; nothing special is needed: no namespaces, no root) make
a square with a diagonal.  Each node dials its neighbours' forwarders, so no
shortcut exists: the nodes only ever talk through the delayed links.  The test
checks that every ordered pair ends on its lowest-latency route, then makes one
link silent (nothing is forwarded, nothing is closed) and checks that every
pair moves to the new lowest-latency route.

The bound: every route must be *the* shortest path by the configured delays.
The topology keeps every second-best route at least 2 ms (one way) longer than
the best, far more than what the processes add to a link's measured latency
(well under 1 ms on 127.0.0.1); a route within that margin of the shortest is
the shortest.  The times (to all pairs optimal, the outage, the recovery) are
printed as multiples of the failure-detection time, for docs/benchmarks.md
(run with ``-s``); nothing here asserts a time.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import trio

from overlay.net.control import control_request
from tests.delay_link import DelayLink
from tests.procs import WAIT, node_processes, run_overlay

HELLO, DEAD_AFTER = 0.2, 3
DETECTION = HELLO * DEAD_AFTER
NAMES = "abcd"
DELAYS = {  # one way, seconds: the square a-b-c-d with the slow diagonal a-c
    ("a", "b"): 0.005, ("b", "c"): 0.005, ("c", "d"): 0.010, ("a", "d"): 0.012,
    ("a", "c"): 0.030,
}
SILENCED = ("b", "c")
POLL = 0.05


def shortest(delays: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """All-pairs shortest one-way latency (Floyd-Warshall on four nodes)."""
    inf = float("inf")
    dist = {(x, y): 0.0 if x == y else inf for x in NAMES for y in NAMES}
    for (x, y), d in delays.items():
        dist[x, y] = dist[y, x] = d
    for k, i, j in itertools.product(NAMES, repeat=3):
        dist[i, j] = min(dist[i, j], dist[i, k] + dist[k, j])
    return dist


def status(state: Path) -> dict[str, Any]:
    result: dict[str, Any] = trio.run(control_request, state / "control.sock", "status")
    return result


def route_latencies(states: dict[str, Path], delays: dict[tuple[str, str], float]
                    ) -> dict[tuple[str, str], float | None]:
    """Each ordered pair's route, followed hop by hop through every node's table, as the
    latency of the links it crosses (None: no route, a loop, or a link that is not there)."""
    tables = {name: status(state) for name, state in states.items()}
    name_of = {table["node_id"]: name for name, table in tables.items()}
    hops = {(name, name_of.get(r["destination"])): name_of.get(r["next_hop"])
            for name, table in tables.items() for r in table["routes"]}
    link = {**delays, **{(y, x): d for (x, y), d in delays.items()}}
    out: dict[tuple[str, str], float | None] = {}
    for src, dst in itertools.permutations(NAMES, 2):
        here, total, seen = src, 0.0, {src}
        while here != dst:
            nxt = hops.get((here, dst))
            if nxt is None or nxt in seen or (here, nxt) not in link:
                total = -1.0
                break
            total += link[here, nxt]
            seen.add(nxt)
            here = nxt
        out[src, dst] = None if total < 0 else total
    return out


def neighbour_costs(states: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Each node's measured link metric to each neighbour (by name), in us."""
    tables = {name: status(state) for name, state in states.items()}
    name_of = {table["node_id"]: name for name, table in tables.items()}
    return {name: {name_of.get(n["id"], "?"): n["metric_us"] for n in table["neighbours"]}
            for name, table in tables.items()}


def all_optimal(states: dict[str, Path], delays: dict[tuple[str, str], float]) -> bool:
    best = shortest(delays)
    got = route_latencies(states, delays)
    return all(got[p] is not None and abs(got[p] - best[p]) < 1e-9  # type: ignore[operator]
               for p in got)


def settle(predicate: Any, what: str, since: float, hold: float) -> float:
    """Poll until ``predicate()`` has held for ``hold`` seconds on end; seconds from
    ``since`` to the start of that stretch (bounded by a generous WAIT)."""
    deadline = time.monotonic() + 3 * WAIT
    began: float | None = None
    while True:
        now = time.monotonic()
        if predicate():
            began = now if began is None else began
            if now - began >= hold:
                return began - since
        else:
            began = None
        assert now < deadline, f"timed out waiting for {what} to hold for {hold:g} s"
        time.sleep(POLL)


def wait_for(predicate: Any, what: str, since: float) -> float:
    """Poll until ``predicate()``; seconds from ``since`` (bounded by a generous WAIT)."""
    deadline = time.monotonic() + 3 * WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL)
    return time.monotonic() - since


def test_real_processes_on_delay_links_take_lowest_latency_routes_and_recover() -> None:
    fast = ("--hello-interval", str(HELLO), "--dead-after", str(DEAD_AFTER))
    links: dict[tuple[str, str], DelayLink] = {}
    with node_processes() as start:
        try:
            nodes, listen = {}, {}
            started = time.monotonic()
            for name in NAMES:  # each node dials the forwarders to the nodes before it
                connect = []
                for (x, y), delay in DELAYS.items():
                    if y == name:
                        host, port = listen[x].rsplit(":", 1)
                        links[x, y] = DelayLink((host, int(port)), delay)
                        connect += ["--connect", f"127.0.0.1:{links[x, y].port}"]
                if name == NAMES[-1]:
                    started = time.monotonic()  # the last node, whose links complete the graph
                nodes[name] = start(name, "--listen", "127.0.0.1:0", *connect, *fast)
                listen[name] = nodes[name].ready()["listen"]
            states = {name: node.state for name, node in nodes.items()}

            to_routes = wait_for(lambda: all(
                len(status(s)["routes"]) >= len(NAMES) - 1 for s in states.values()),
                "every node to have a route to every other", started)
            # Optimal from then on: for 20 RTT samples per link, checked throughout.
            to_optimal = settle(lambda: all_optimal(states, DELAYS),
                                "every pair on its lowest-latency route", started, 20 * HELLO)
            costs = neighbour_costs(states)

            links[SILENCED].go_silent()
            cut = time.monotonic()
            remaining = {k: v for k, v in DELAYS.items() if k != SILENCED}
            b, c = (states[x] for x in SILENCED)
            ids = {name: status(s)["node_id"] for name, s in states.items()}

            def uses_cut_link() -> bool:
                got = route_latencies(states, DELAYS)
                best = shortest(remaining)
                # A route still through the silent link is as short as with it, and
                # shorter than anything without it.
                return any(v is not None and v < best[p] - 1e-9 for p, v in got.items())

            outage = wait_for(lambda: not uses_cut_link(), "no route through the silent link",
                              cut)
            detected = wait_for(lambda: (
                ids[SILENCED[1]] not in {n["id"] for n in status(b)["neighbours"]}
                and ids[SILENCED[0]] not in {n["id"] for n in status(c)["neighbours"]}),
                "both ends to declare the silent link dead", cut)
            recovered = settle(lambda: all_optimal(states, remaining),
                               "every pair on its new lowest-latency route", cut, 20 * HELLO)

            # The same tables as a user sees them.
            shown = run_overlay("status", "--json", "--state", str(states["b"]))
            assert shown.returncode == 0
            assert ids["c"] not in {n["id"] for n in json.loads(shown.stdout)["neighbours"]}
            route = run_overlay("route", ids["c"], "--state", str(states["b"]))
            assert route.returncode == 0 and ids["a"][:8] in route.stdout, route.stdout
        finally:
            for link in links.values():
                link.close()
        for node in nodes.values():
            assert "Traceback" not in node.log

    link_us = {f"{x}-{y}": round(d * 1e6) for (x, y), d in DELAYS.items()}
    print(f"\nconfigured one-way delays (us): {link_us}")
    print(f"measured link costs (us) per node: {costs}")
    print(f"failure detection (hello x dead_after): {DETECTION:.3f} s")
    for what, seconds in (("every pair routed", to_routes), ("every pair optimal", to_optimal),
                          ("outage (routes through the silent link)", outage),
                          ("silent link declared dead", detected),
                          ("every pair optimal again", recovered)):
        print(f"{what}: {seconds:.3f} s = {seconds / DETECTION:.2f} x detection")
