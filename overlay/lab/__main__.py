"""``python -m overlay.lab`` is ``bin/nat-lab`` without the dependency check."""

from __future__ import annotations

from overlay.lab.cli import main

raise SystemExit(main())
