"""Progress of long work on stderr, shown for the benchmarks: ``bar(phase, fraction)``.

A :class:`ProgressBar` is what ``overlay bench`` passes as the
:data:`~overlay.bench.progress.Progress` of a bench's ``run(config, progress)``;
the benches themselves only call it and never print.

On a terminal, one line rewritten in place with a bar, the percentage and the
time so far; elsewhere (a log, CI) a plain line at each new phase and every
quarter, so a redirected run stays readable.  Stdout is left to the results.

A simulated bench (``virtual_time=True``) runs under trio's MockClock, and its
bar shows both clocks, e.g. ``virtual 31.2 s, real 14 s``: the virtual one is
how far the protocol has got (a convergence phase's fraction alone may sit at
99% for minutes of protocol time), and it is also repainted each virtual
second on a terminal.
"""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, *, virtual_time: bool = False) -> None:
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self.virtual_time = virtual_time
        self.last: tuple[str, int, int] = ("", -1, -1)

    def __call__(self, phase: str, fraction: float) -> None:
        percent = int(max(0.0, min(1.0, fraction)) * 100)
        step = percent if self.tty else percent // 25 * 25
        virtual = self._virtual_now()
        tick = int(virtual) if self.tty and virtual is not None else -1
        if (phase, step, tick) == self.last:
            return
        self.last = (phase, step, tick)
        elapsed = time.perf_counter() - self.started
        if self.tty:  # fixed widths, so the line does not jitter as it is rewritten
            clocks = (f"{elapsed:5.0f} s" if virtual is None
                      else f"virtual {virtual:7.1f} s, real {elapsed:4.0f} s")
            bar = "#" * (percent // 5)
            print(f"\r{phase:<26} [{bar:<20}] {percent:3d}%  {clocks}\x1b[K", end="",
                  file=sys.stderr, flush=True)
        else:
            clocks = (f"{elapsed:.0f} s" if virtual is None
                      else f"virtual {virtual:.1f} s, real {elapsed:.0f} s")
            print(f"{phase}: {percent}% ({clocks})", file=sys.stderr, flush=True)

    def _virtual_now(self) -> float | None:
        """The bench's virtual clock (trio's MockClock starts at 0), if it runs on one."""
        if not self.virtual_time:
            return None
        import trio

        try:
            return trio.current_time()
        except RuntimeError:  # called outside the run
            return None

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)
