"""``overlay bench hybrid``: the hybrid design in the simulator, figures beside the issue's targets.

This module is the bench: its config (which scenarios, on what world) and its
run.  What it runs on is the simulator's: the world (a latency map with a
directory, supernodes and NAT-bound clients on it) is :mod:`overlay.sim.world`;
the scenarios (relayed latency against the direct path, one supernode's
capacity, and the whole run with its report and targets) are
:mod:`overlay.sim.hybrid`, failover under reliable conversations is
:mod:`overlay.sim.failover`.  Every latency figure is a ratio to a baseline
from the same run (the direct path on the same latency map), and every
failover time is counted from the moment the failure became detectable, so
the figures do not depend on how fast this machine is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from overlay.bench.progress import Progress
from overlay.sim.hybrid import HybridConfig, HybridReport
from overlay.sim.hybrid import run as run_scenarios

__all__ = ["SCENARIOS", "HybridBenchConfig", "HybridConfig", "HybridReport", "run"]

SCENARIOS = ("relay", "failover", "capacity")


@dataclass(frozen=True)
class HybridBenchConfig:
    world: HybridConfig = field(default_factory=HybridConfig)
    """The simulated world and the scenarios' own settings."""
    scenarios: frozenset[str] = frozenset(SCENARIOS)
    """Which of :data:`SCENARIOS` to run."""


async def run(config: HybridBenchConfig, progress: Progress) -> HybridReport:
    """The chosen scenarios in virtual time (call under a MockClock)."""
    return await run_scenarios(config.world, progress, scenarios=config.scenarios)
