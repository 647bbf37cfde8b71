"""Seeded scheduling: tasks ready at one instant run in an order fixed by the seed."""

from __future__ import annotations

import trio
import trio.testing

from overlay.sim.determinism import deterministic_scheduling


def _order(seed: int) -> list[int]:
    order: list[int] = []

    async def main() -> None:
        async def record(i: int) -> None:
            await trio.sleep(1.0)  # all wake at the same virtual instant
            order.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(record, i)

    with deterministic_scheduling(seed):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return order


def test_the_same_seed_gives_the_same_order_and_another_seed_another() -> None:
    assert _order(1) == _order(1)
    assert _order(1) != _order(2)
    assert sorted(_order(3)) == list(range(20))


def test_the_scheduler_is_put_back_as_it_was() -> None:
    run_module = trio._core._run
    flag, state = run_module._ALLOW_DETERMINISTIC_SCHEDULING, run_module._r.getstate()
    _order(5)
    assert run_module._ALLOW_DETERMINISTIC_SCHEDULING is flag
    assert run_module._r.getstate() == state
