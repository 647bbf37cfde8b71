"""The benchmarks' reports as text: one renderer per bench, none of them measuring anything.

:mod:`overlay.cli.bench` runs a bench and prints either its report's
``to_json()`` (``--json``) or what the function here makes of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from overlay.bench.chat import ChatReport
    from overlay.bench.directory import DirectoryReport
    from overlay.bench.directory_compare import CompareReport
    from overlay.bench.nat_report import NatReport
    from overlay.bench.routing import RoutingReport
    from overlay.bench.storm import StormReport
    from overlay.bench.transport import TransportReport
    from overlay.sim.hybrid import HybridReport

TARGET_CLIENTS = 100
"""The directory bench's targets are stated for this many clients; other runs get no verdict."""


def render_routing(r: RoutingReport) -> str:
    lines = [
        f"topology        {r.topology}: {r.nodes} nodes, {r.links} links, "
        f"mean degree {r.mean_degree}, seed {r.seed}",
        f"convergence     {r.convergence_s} s virtual, reached after {r.convergence_wall_s} s "
        "of wall time (node start-up included)" if r.converged
        else "convergence     NOT converged",
        f"optimal routes  {r.optimal_share:.2%} of {r.pairs} pairs "
        f"({r.unreachable_pairs} unreachable)",
        f"stretch         mean {r.mean_stretch:.4f}, p99 {r.p99_stretch:.4f}, "
        f"max {r.max_stretch:.4f}",
        f"loops           {r.loops_in_tables} in tables",
        "control traffic not measured (no steady state)" if r.control_bytes_per_node_s is None
        else f"control traffic {r.control_bytes_per_node_s:.0f} bytes/node/s (steady state)",
        "route flaps     not measured (no steady state)" if r.steady_next_hop_changes is None
        else f"route flaps     {r.steady_next_hop_changes} next-hop changes in steady state",
    ]
    if r.failed_links or r.crashed_nodes:
        lines += [
            f"failures        {r.failed_links} links failed, {r.crashed_nodes} nodes crashed: "
            f"detected after {r.failure_detection_s} s, "
            f"reconverged after {r.reconvergence_s} s "
            f"({r.reconvergence_ratio} x the detection time)",
            f"traffic         {r.packets_delivered}/{r.packets_sent} delivered "
            f"({r.delivery_ratio:.4%}); lost in failed links {r.lost_on_failed_links}, "
            f"lost elsewhere {r.lost_elsewhere}, dropped {r.dropped_elsewhere}, "
            f"looping packets {r.looping_packets}",
            f"after failure   {r.optimal_share_after:.2%} of pairs on an optimal route",
        ]
    lines += [f"cost            {r.wall_s} s wall for {r.virtual_s} s virtual, "
              f"peak RSS {r.peak_rss_mb} MB"]
    lines += [f"note            {note}" for note in r.notes]
    return "\n".join(lines)


def render_transport(report: TransportReport) -> str:
    """Overlay beside plain trio for each relay count, then the handshake."""
    where = ("every node and forwarder in its own process" if report.mode == "processes"
             else "all in this process")
    lines = [
        f"{report.count} messages of {report.size} bytes; {report.pings} round trips; {where}",
        f"{'relays':>6}  {'':8} {'msgs/s':>9} {'MB/s':>8} {'rtt p50':>9} {'rtt p99':>9} "
        f"{'p50/hop':>9}",
    ]
    for r in report.hops:
        for label, f, per_hop in (("overlay", r.overlay, r.rtt_p50_per_hop_us),
                                  ("plain", r.baseline, r.baseline_rtt_p50_per_hop_us)):
            lines.append(f"{r.relays if label == 'overlay' else '':>6}  {label:8} "
                         f"{f.goodput_msgs_s:>9.0f} {f.goodput_mb_s:>8.2f} "
                         f"{f.rtt_p50_ms:>7.3f}ms {f.rtt_p99_ms:>7.3f}ms {per_hop:>7.0f}us")
        extra = ""
        if r.rtt_p50_added_per_relay_us is not None:
            extra = f"; {r.rtt_p50_added_per_relay_us:.0f} us more round trip per relay"
        lines.append(f"{'':6}  goodput {r.goodput_ratio:.1%} of plain trio{extra}")
        if r.relay_cpu_us_per_msg is not None and r.baseline_relay_cpu_us_per_msg is not None:
            lines.append(f"{'':6}  CPU per message in each relay: overlay node "
                         f"{r.relay_cpu_us_per_msg:.0f} us, plain forwarder "
                         f"{r.baseline_relay_cpu_us_per_msg:.0f} us")
    h = report.handshake
    lines.append(f"handshake ({h.count}, TCP connect to established): p50 {h.p50_ms:.3f} ms, "
                 f"p95 {h.p95_ms:.3f} ms; bare TCP connect p50 {h.tcp_connect_p50_ms:.3f} ms, "
                 f"p95 {h.tcp_connect_p95_ms:.3f} ms")
    return "\n".join(lines)


def render_directory(r: DirectoryReport) -> str:
    """The report as a table: figures first, then who used the CPU, errors, the targets."""
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}ms"

    h = r.hash
    phases = (r.logins, r.lookups, r.presence)
    where = (f"server on {r.servers[0]}" if len(r.servers) == 1
             else f"{len(r.servers)} servers on {', '.join(r.servers)}")
    lines = [
        f"{r.clients} clients in {r.client_procs} process(es), {r.contacts_per_user} contacts "
        f"each, {r.duration_s:g} s per phase; {r.cores} cores",
        f"{where}; database {r.database}",
        f"setup: {r.setup.users} users registered and logged in, {r.setup.contact_pairs} "
        f"contact pairs, in {r.setup.seconds:.1f} s",
        "",
        f"{'phase':<10} {'load':>10} {'ops':>8} {'ops/s':>9} {'p50':>10} {'p99':>10} "
        f"{'errors':>7}",
    ]
    lines += [f"{p.name:<10} {'closed' if p.offered_s is None else f'{p.offered_s:g}/s':>10} "
              f"{p.ops:>8} {p.ops_s:>9.1f} {ms(p.p50_ms):>10} {ms(p.p99_ms):>10} "
              f"{p.errors:>7}" for p in phases]
    lines += [
        "",
        f"password hash (argon2id, {h.threads} threads, server idle): {h.hashes_s:.1f}/s, "
        f"the faster of: before logins {h.before.hashes_s:.1f}/s "
        f"({h.before.ms_per_hash:.1f} ms each), after {h.after.hashes_s:.1f}/s "
        f"({h.after.ms_per_hash:.1f} ms each)",
        f"logins/s = {r.login_hash_ratio:.1%} of the bare hash rate",
    ]
    if r.presence.notices:
        lines.append(f"presence notices delivered to contacts: {r.presence.notices_s:.0f}/s")
    if len(r.servers) > 1:
        lines.append("answered by each server: " + "; ".join(
            f"{p.name} " + " / ".join(str(n) for n in p.ops_by_server) for p in phases))
    windows = [(p.name, p.cpu) for p in phases] + [("hash", h.before.cpu),
                                                    ("hash again", h.after.cpu)]
    if all(cpu is not None for _, cpu in windows):
        lines.append("cores busy     server clients  bench     db  other   idle   server/op "
                     "clients/op     db/op")
        per_op = {p.name: (p.server_us_per_op, p.clients_us_per_op, p.database_us_per_op)
                  for p in phases}
        for name, cpu in windows:
            assert cpu is not None
            server_op, clients_op, db_op = per_op.get(name, (None, None, None))
            cost = "" if server_op is None or clients_op is None \
                else f" {server_op:>9.0f}us {clients_op:>8.0f}us {_us(db_op):>9}"
            db = "-" if cpu.database is None else f"{cpu.database:.2f}"
            lines.append(f"  {name:<12} {cpu.server:>6.2f} {cpu.clients:>7.2f} "
                         f"{cpu.bench:>6.2f} {db:>6} {cpu.other:>6.2f} {cpu.idle:>6.2f}{cost}")
    for p in phases:
        if p.errors:
            kinds = ", ".join(f"{k}: {n}" for k, n in p.errors_by_kind.items())
            lines.append(f"errors in {p.name}: {kinds}; first: {p.first_error}")
    comparable = r.clients == TARGET_CLIENTS
    lines.append(f"targets (stated for {TARGET_CLIENTS} clients on 2 cores"
                 f"{'' if comparable else f'; this run had {r.clients}, so no verdict'}):")
    for t in r.targets:
        sign = ">=" if t.kind == "min" else "<"
        shown = "-" if t.measured is None else f"{t.measured:g}"
        verdict = ("met" if t.met else "MISSED") if comparable else "-"
        lines.append(f"  {t.figure:<18} {shown:>10} (target {sign} {t.limit:g}): {verdict}")
    lines += [f"note: {note}" for note in r.notes]
    return "\n".join(lines)


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}us"


def render_directory_compare(r: CompareReport) -> str:
    """One line per configuration: rates and ratios to the baseline, then CPU per request."""
    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    first = r.runs[0]
    lines = [
        f"{first.clients} clients in {first.client_procs} process(es), {first.duration_s:g} s "
        f"per phase, {first.cores} cores; ratios to {r.baseline} of the same invocation",
        "",
        f"{'':<15} {'logins/s':>17} {'of hash':>8} {'lookups/s':>17} {'presence/s':>17}",
    ]
    for row in r.rows:
        cells = [f"{row.ops_s[name]:>8.1f} ({ratio(row.ratio[name]):>6})"
                 for name in ("logins", "lookups", "presence")]
        lines.append(f"{row.label:<15} {cells[0]:>17} {row.login_hash_ratio:>8.1%} "
                     f"{cells[1]:>17} {cells[2]:>17}")
    lines += ["", "CPU per request (server processes summed; + database backends)",
              f"{'':<15} {'login':>17} {'lookup':>17} {'presence':>17} {'other cores':>12}"]
    for row in r.rows:
        cells = []
        for name in ("logins", "lookups", "presence"):
            server, db = row.server_us_per_op[name], row.database_us_per_op[name]
            if name == "logins" and server is not None:
                text = f"{server / 1000:.1f}ms"
                text += "" if db is None else f" + {db / 1000:.1f}ms"
            else:
                text = _us(server) + ("" if db is None else f" + {_us(db)}")
            cells.append(text)
        other = "-" if row.other_cores_max is None else f"{row.other_cores_max:.2f}"
        lines.append(f"{row.label:<15} {cells[0]:>17} {cells[1]:>17} {cells[2]:>17} "
                     f"{other:>12}")
    split = [row for row in r.rows if row.servers > 1]
    if split:
        lines.append("")
        for row in split:
            lines.append(f"{row.label}: answered by each server: " + "; ".join(
                f"{name} " + " / ".join(str(n) for n in counts)
                for name, counts in row.ops_by_server.items()))
    everywhere = [note for note in r.runs[0].notes if all(note in run.notes for run in r.runs)]
    for row, run in zip(r.rows, r.runs, strict=True):
        lines += [f"note ({row.label}): {note}" for note in run.notes if note not in everywhere]
    lines += [f"note: {note}" for note in everywhere]
    return "\n".join(lines)


def render_storm(report: StormReport) -> str:
    """One figure a line, named as in the JSON."""
    return "\n".join(f"{name:18} {value}" for name, value in report.to_json().items())


def render_chat(report: ChatReport) -> str:
    """The relayed chat beside its two baselines (the same path's echo, a direct link)."""
    result = report.to_json()
    relayed, echo, direct = (result["chat_relayed"], result["echo_same_path"],
                             result["chat_direct"])
    via = " -> ".join(result["path"]["via"])
    return "\n".join([
        f"chat delivered-receipt time, {result['messages']} messages, one at a time",
        f"  path alice -> bob: {result['path']['kind']} via {via}",
        "",
        "                               p50 ms    p99 ms    max ms",
        f"  chat, relayed (2 supernodes) {relayed['p50_ms']:8.3f}  {relayed['p99_ms']:8.3f}"
        f"  {relayed['max_ms']:8.3f}   target p50 < 10, p99 < 50",
        f"  echo, same path (baseline)   {echo['p50_ms']:8.3f}  {echo['p99_ms']:8.3f}"
        f"  {echo['max_ms']:8.3f}",
        f"  chat, {direct['path']} link            {direct['p50_ms']:8.3f}  "
        f"{direct['p99_ms']:8.3f}  {direct['max_ms']:8.3f}",
        "",
        f"  chat / echo at p50: {result['ratio_p50_chat_to_echo']:.2f}x "
        "(sealing, history on disk, the receipt)",
        f"  {result['seconds']:.1f} s in all",
    ])


def render_hybrid(r: HybridReport) -> str:
    """The report as text: one block per scenario, then the targets."""
    lines = [f"{r.supernodes} supernodes, {r.clients} clients, seed {r.seed}; "
             f"{r.virtual_s:g} s virtual in {r.wall_s:g} s wall, peak RSS {r.peak_rss_mb:g} MB"]
    if r.relay is None and r.failover is None:
        lines = [f"seed {r.seed}; {r.virtual_s:g} s virtual in {r.wall_s:g} s wall, peak RSS "
                 f"{r.peak_rss_mb:g} MB"]
    if r.relay is not None:
        a = r.relay
        lines += [
            "",
            f"relayed latency ({a.answered}/{a.pairs} pairs answered; one way = echo RTT / 2)",
            f"  relayed/direct   median {_num(a.ratio_p50)}, p90 {_num(a.ratio_p90)}",
            f"  relayed          median {_num(a.relayed_p50_ms)} ms, p90 "
            f"{_num(a.relayed_p90_ms)} ms",
            f"  direct (map)     median {_num(a.direct_p50_ms)} ms, p90 "
            f"{_num(a.direct_p90_ms)} ms",
            f"  homes            {a.at_nearest_share:.1%} of clients at their nearest "
            f"supernode; extra access latency median {_num(a.home_extra_p50_ms)} ms, p90 "
            f"{_num(a.home_extra_p90_ms)} ms",
            f"  mesh routes      stretch median {_num(a.mesh_stretch_p50)}, p90 "
            f"{_num(a.mesh_stretch_p90)} (route latency / direct supernode link)",
            f"  geometry         median ratio {_num(a.nearest_relay_ratio_p50)} via the "
            f"nearest supernodes joined directly, {_num(a.ideal_ratio_p50)} via the best two",
        ]
    if r.failover is not None:
        f = r.failover
        lines += [
            "",
            f"failover (supernode {f.victim} powered off; detectable after "
            f"{f.detection_delay_s:g} s)",
            f"  affected clients {f.affected} ({f.without_standby} without a standby up); "
            f"{f.standby_lost} more lost their standby ({f.standby_replaced} had a new one up "
            f"within {_num(f.standby_replaced_max_s)} s)",
            f"  reattached       {f.reattached}/{f.affected}, median {_num(f.reattach_p50_s)} s, "
            f"worst {_num(f.reattach_max_s)} s after detectable",
            f"  reachable        {f.reachable}/{f.affected}, median {_num(f.reachable_p50_s)} s, "
            f"worst {_num(f.reachable_max_s)} s (first echo back from the peer)",
            f"  within 3 s       {f.within_3s}/{f.affected}",
            f"  conversations    {f.conversations}: {f.messages_delivered}/{f.messages_sent} "
            f"messages delivered; lost {f.lost}, duplicated {f.duplicated}, reordered "
            f"{f.reordered}; {f.retransmissions} retransmissions",
            f"  longest pause    median {_num(f.pause_p50_s)} s, worst {_num(f.pause_max_s)} s "
            "(affected conversations)",
            f"  message delay    median {_num(f.delay_p50_s)} s, p99 {_num(f.delay_p99_s)} s, "
            f"worst {_num(f.delay_max_s)} s; all acknowledged {_num(f.drained_s)} s after "
            f"sending stopped ({f.unacknowledged} directions never)",
        ]
        lines += [f"  problem          {line}" for line in f.problems]
    if r.capacity is not None:
        c = r.capacity
        lines += [
            "",
            f"capacity (one supernode, {c.clients} clients)",
            f"  attached         {c.attached}; echoes {c.echo_replies}/{c.echo_pairs} answered "
            f"(median RTT {_num(c.echo_rtt_p50_ms)} ms)",
            f"  memory           {c.supernode_bytes_per_client / 1024:.1f} KiB per attached "
            f"client on the supernode; {c.process_bytes_per_client / 1024:.1f} KiB per client "
            "for the whole process",
        ]
    lines += ["", "targets"]
    for t in r.targets:
        verdict = "-" if t.met is None else "met" if t.met else "MISSED"
        lines.append(f"  {t.figure:<56} {_num(t.measured):>8} (target {t.target}): {verdict}")
    lines += [f"note: {note}" for note in r.notes]
    return "\n".join(lines)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value + 0.0:g}"  # + 0.0 turns a rounded -0.0 into 0 ("-0 s" reads as a bug)
    return str(value)


def render_nat(report: NatReport) -> str:
    """One row per pairing, then the two targets."""
    def num(value: float | None, fmt: str = ".3f") -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"{report.repeat} session(s) per pairing, {report.messages} stop-and-wait messages "
        f"per window; {report.wall_s:.0f} s",
        f"{'pairing':<16} {'expect':<7} {'direct':>7} {'deliv':>6} {'t->direct':>9} "
        f"{'p90':>6} {'dials/ok':>8} {'rtt rel':>8} {'rtt aft':>8} {'ratio':>6} "
        f"{'SN bytes bef':>12} {'aft':>7} {'fwd bef':>7} {'aft':>5}",
    ]
    for p in report.pairings:
        lines.append(
            f"{p.pairing:<16} {'direct' if p.direct_expected else 'relay':<7} "
            f"{p.direct:>3}/{p.sessions:<3} {p.delivered:>2}/{p.sessions:<3} "
            f"{num(p.time_to_direct_median_s):>8}s {num(p.time_to_direct_p90_s):>5}s "
            f"{num(p.attempts_per_success, '.2f'):>8} {num(p.relayed_rtt_ms):>6}ms "
            f"{num(p.after_rtt_ms):>6}ms {num(p.rtt_ratio, '.2f'):>6} "
            f"{num(p.before_bytes, '.0f'):>12} {num(p.after_bytes, '.0f'):>7} "
            f"{num(p.before_forwarded, '.0f'):>7} {num(p.after_forwarded, '.0f'):>5}"
            + (f"  ({p.failed} failed)" if p.failed else ""))
    share = report.direct_share_where_expected
    hard = report.hard_hard_delivered_share
    lines += [
        f"direct where expected: {'-' if share is None else f'{share:.0%}'} (target >= 90%)",
        f"hard-hard delivered by relay: {'-' if hard is None else f'{hard:.0%}'} "
        "(target 100%)",
    ]
    errors = [s for s in report.sessions if s.error]
    lines += [f"session {s.number} ({s.pairing}) failed: {s.error}" for s in errors]
    if report.stopped_early:
        lines.append("stopped early: --time-limit reached; the table covers what ran")
    return "\n".join(lines)
