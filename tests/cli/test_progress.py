"""The benches' progress lines: phase, percentage and, for simulated benches, both clocks."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from overlay.cli.progress import ProgressBar


def test_a_simulated_run_shows_virtual_and_real_time(capsys: pytest.CaptureFixture[str]) -> None:
    async def bench(bar: ProgressBar) -> None:
        bar("converging", 0.0)
        await trio.sleep(125.0)  # virtual: the MockClock jumps
        bar("converging", 0.5)
        bar("converging", 0.51)  # same quarter: no new line off a terminal

    bar = ProgressBar(virtual_time=True)
    trio.run(bench, bar, clock=trio.testing.MockClock(autojump_threshold=0))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("converging: 0% (virtual 0.0 s, real ")
    assert lines[1].startswith("converging: 50% (virtual 125.0 s, real ")


def test_a_real_time_run_shows_only_the_time_so_far(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar()
    bar("handshakes", 0.25)
    assert capsys.readouterr().err == "handshakes: 25% (0 s)\n"
