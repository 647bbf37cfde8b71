"""``overlay bench``'s parsers restate a few facts of the benches (so that ``--help`` loads no
bench); here they are checked against the benches themselves."""

from __future__ import annotations

import dataclasses

import pytest

from overlay.bench import chat, hybrid
from overlay.cli import bench
from overlay.sim import topology
from overlay.sim.world import HybridConfig


def test_the_topology_kinds_and_latency_units_are_the_simulators() -> None:
    assert bench.TOPOLOGY_KINDS == topology.KINDS
    assert tuple(sorted(topology.LATENCY_UNITS)) == bench.LATENCY_UNITS


def test_the_hybrid_defaults_and_scenarios_are_the_benchs() -> None:
    actual = HybridConfig()
    for field in dataclasses.fields(bench.HYBRID_DEFAULTS):
        assert getattr(bench.HYBRID_DEFAULTS, field.name) == getattr(actual, field.name), \
            field.name
    assert bench.HYBRID_SCENARIOS == hybrid.SCENARIOS


def test_the_chat_help_is_the_chat_bench_docstring() -> None:
    assert (chat.__doc__ or "").replace("``", "`") == bench.CHAT_DESCRIPTION


def test_the_nat_pairings_and_defaults_are_the_benchs() -> None:
    from overlay.bench import nat
    from overlay.cli.main import build_parser

    assert tuple(p.name for p in nat.PAIRINGS) == bench.NAT_PAIRINGS
    args = build_parser(["bench", "nat"]).parse_args(["bench", "nat"])
    config = nat.NatBenchConfig()
    assert (int(args.repeat), int(args.messages), float(args.start_delay),
            float(args.session_timeout), float(args.time_limit), args.prefix) == (
        config.repeat, config.messages, config.start_delay, config.session_timeout,
        config.time_limit, config.prefix)


def test_the_route_check_help_states_the_benchs_sample(
        capsys: pytest.CaptureFixture[str]) -> None:
    from overlay.bench.routing_quality import FULL_CHECK_NODES, SAMPLED_DESTINATIONS
    from overlay.cli.main import build_parser

    argv = ["bench", "routing", "--help"]
    with pytest.raises(SystemExit):
        build_parser(argv).parse_args(argv)
    text = " ".join(capsys.readouterr().out.split())
    assert f"all up to {FULL_CHECK_NODES:,} nodes, {SAMPLED_DESTINATIONS} beyond" in text
