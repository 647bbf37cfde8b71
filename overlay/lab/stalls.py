"""Where a trio program waits: its task tree with each task's await stack.

A lab peer that stops making progress sits in trio's epoll wait, so
:mod:`faulthandler` shows one useless frame.  What tells the story is which
task waits on what: :func:`format_task_tree` walks the tree from the root task
(``Task.iter_await_frames``) and :func:`report_if_stuck` logs it when a phase
has not finished in time, which is what the NAT lab's tests print when a peer
says nothing within their limit.
"""

from __future__ import annotations

import logging
import os

import trio

log = logging.getLogger(__name__)

FRAMES_PER_TASK = 6
"""The innermost frames of each task's stack: where it waits, and what called that."""

_TRIO_DIR = os.path.dirname(trio.__file__) + os.sep


def format_task_tree(root: trio.lowlevel.Task | None = None) -> str:
    """Every task under ``root`` (default: the run's root task), indented by nesting,
    each with its innermost awaited frames (file:line function)."""
    lines: list[str] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        indent = "  " * depth
        lines.append(f"{indent}task {task.name}")
        for where in _await_stack(task)[-FRAMES_PER_TASK:]:
            lines.append(f"{indent}  at {where}")
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    root = root or trio.lowlevel.current_root_task()
    if root is None:
        return "(no trio run)"
    walk(root, 0)
    return "\n".join(lines)


def _await_stack(task: trio.lowlevel.Task) -> list[str]:
    """``file:line function`` per awaited frame, outermost first; a run of frames
    inside trio itself is shown by its first (the trio call the task made)."""
    stack: list[str] = []
    in_trio = False
    for frame, lineno in task.iter_await_frames():
        filename = frame.f_code.co_filename
        inside = filename.startswith(_TRIO_DIR)
        if not (inside and in_trio):
            shown = f"trio/{os.path.relpath(filename, _TRIO_DIR)}" if inside \
                else os.path.relpath(filename)
            stack.append(f"{shown}:{lineno} {frame.f_code.co_name}")
        in_trio = inside
    return stack


async def report_if_stuck(after: float, what: str) -> None:
    """Sleep ``after`` seconds, then log the task tree as a warning (``what`` names
    the phase that has not finished).  Cancel the task when the phase is done."""
    await trio.sleep(after)
    log.warning("%s not done after %g s; the tasks wait here:\n%s", what, after,
                format_task_tree())
