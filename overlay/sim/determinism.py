"""Replay: make trio's choice among tasks that are ready at the same instant a seeded one.

Under ``MockClock`` every source of nondeterminism in a simulation is injected
(link jitter, node randomness and nonces all come from seeded generators)
except one: when several tasks become runnable at the same virtual instant,
trio runs them in an order it randomises on purpose (it reverses the batch
half of the time, from an unseeded generator), and the order they were woken
in can depend on memory addresses.  Two runs with the same seed then reach the
same figures by different interleavings, and their event traces differ.

trio has a switch for exactly this, which it turns on when Hypothesis is
installed: sort each batch by task creation order, then shuffle it with its
module generator.  :func:`deterministic_scheduling` turns it on and seeds that
generator for the duration of a run, and puts both back afterwards.  It reaches
into ``trio._core._run`` (the same two names the Hypothesis plugin sets): if a
trio release renames them, it raises rather than silently replaying nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import trio

_FLAG = "_ALLOW_DETERMINISTIC_SCHEDULING"


@contextmanager
def deterministic_scheduling(seed: int) -> Iterator[None]:
    """Within the block, tasks ready at one instant run in an order fixed by ``seed``."""
    run_module = trio._core._run
    scheduler_rng = getattr(run_module, "_r", None)
    if not isinstance(scheduler_rng, random.Random) or not hasattr(run_module, _FLAG):
        raise RuntimeError("this trio version offers no deterministic scheduling hook")
    old_flag = getattr(run_module, _FLAG)
    old_state = scheduler_rng.getstate()
    setattr(run_module, _FLAG, True)
    scheduler_rng.seed(f"trio-scheduler/{seed}")
    try:
        yield
    finally:
        setattr(run_module, _FLAG, old_flag)
        scheduler_rng.setstate(old_state)
