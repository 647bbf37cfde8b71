"""``python -m overlay`` is the same as the ``overlay`` console script."""

from __future__ import annotations

from overlay.cli.main import main

raise SystemExit(main())
