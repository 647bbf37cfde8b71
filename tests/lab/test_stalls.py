"""The task tree a stuck lab peer reports: every task, where each one waits."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from overlay.lab.stalls import format_task_tree, report_if_stuck


async def wait_for_a_login_that_never_comes(event: trio.Event) -> None:
    await event.wait()


async def test_the_tree_names_each_task_and_the_line_it_waits_on() -> None:
    event = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_a_login_that_never_comes, event, name="befriend")
        await trio.testing.wait_all_tasks_blocked()
        tree = format_task_tree()
        event.set()
    lines = tree.splitlines()
    assert lines[0] == "task <init>"  # the root task, unindented
    befriend = next(i for i, line in enumerate(lines) if line.strip() == "task befriend")
    test_task = next(i for i, line in enumerate(lines) if line.strip().startswith("task ")
                     and "test_the_tree_names_each_task_and_the_line_it_waits_on" in line)
    assert test_task < befriend  # a child of this test's task: one level deeper
    assert indent(lines[befriend]) == indent(lines[test_task]) + 2
    assert lines[befriend + 1].strip().startswith("at tests/lab/test_stalls.py:")
    assert lines[befriend + 1].endswith(" wait_for_a_login_that_never_comes")
    # the trio call it made, one line for trio's own frames beneath it
    assert lines[befriend + 2].strip().startswith("at trio/_sync.py:")
    assert lines[befriend + 2].endswith(" wait")
    assert len(lines) == befriend + 3, tree


def indent(line: str) -> int:
    return len(line) - len(line.lstrip())


async def test_a_phase_not_done_in_time_logs_the_tree_once(
        caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock) -> None:
    caplog.set_level(logging.WARNING, logger="overlay.lab.stalls")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_if_stuck, 45.0, "start-up")
        await trio.sleep(44.9)
        assert caplog.records == []
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    [record] = caplog.records
    assert record.getMessage().startswith("start-up not done after 45 s")
    assert "report_if_stuck" in record.getMessage()


async def test_a_phase_done_in_time_logs_nothing(
        caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock) -> None:
    caplog.set_level(logging.WARNING, logger="overlay.lab.stalls")
    with trio.move_on_after(10.0):
        await report_if_stuck(45.0, "start-up")
    assert caplog.records == []
