"""What a benchmark reports its progress to: ``progress(phase, fraction)``.

The benchmarks measure and report; how progress is shown (a bar on a terminal,
plain lines in a log) is the command line's business (:mod:`overlay.cli.progress`),
so this module holds only the type every bench's ``run(config, progress)`` takes.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, float], None]
"""Called as a run advances: a phase name and how far it is, 0.0 to 1.0."""


def no_progress(phase: str, fraction: float) -> None:
    """A progress sink that shows nothing (tests, library callers)."""
