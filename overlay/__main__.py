"""``python -m overlay`` is the same as the ``overlay`` console script."""

from __future__ import annotations

import sys

try:
    from overlay.cli.main import main
except KeyboardInterrupt:  # Ctrl-C this early: answered as main() would answer it
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("overlay: interrupted", file=sys.stderr)
    sys.stderr.flush()
    import os

    os._exit(130)  # as overlay.cli.main.interrupted_exit does, for the same reason

raise SystemExit(main())
