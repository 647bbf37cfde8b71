"""``overlay bench``'s parsers restate a few facts of the benches (so that ``--help`` loads no
bench); here they are checked against the benches themselves."""

from __future__ import annotations

import dataclasses

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
