"""Progress of long work on stderr, shown for the benchmarks: ``bar(phase, fraction)``.

A :class:`ProgressBar` is what ``overlay bench`` passes as the
:data:`~overlay.bench.progress.Progress` of a bench's ``run(config, progress)``;
the benches themselves only call it and never print.

On a terminal, one line rewritten in place with a bar, the percentage and the
time so far; elsewhere (a log, CI) a plain line at each new phase and every
quarter, so a redirected run stays readable.  Stdout is left to the results.
"""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self.last: tuple[str, int] = ("", -1)

    def __call__(self, phase: str, fraction: float) -> None:
        percent = int(max(0.0, min(1.0, fraction)) * 100)
        step = percent if self.tty else percent // 25 * 25
        if (phase, step) == self.last:
            return
        self.last = (phase, step)
        elapsed = time.perf_counter() - self.started
        if self.tty:
            bar = "#" * (percent // 5)
            print(f"\r{phase:<26} [{bar:<20}] {percent:3d}%  {elapsed:5.0f} s\x1b[K", end="",
                  file=sys.stderr, flush=True)
        else:
            print(f"{phase}: {percent}% ({elapsed:.0f} s)", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)
