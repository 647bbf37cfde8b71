"""The real-NAT lab tests run only where the lab can; with OVERLAY_REQUIRE_NETNS=1 they must."""

from __future__ import annotations

import os

import pytest

from overlay.lab import available


@pytest.fixture(scope="session")
def netns_required() -> None:
    """Skip with the reason the lab cannot run here, or fail if CI demands the lab."""
    reason = available()
    if reason is None:
        return
    if os.environ.get("OVERLAY_REQUIRE_NETNS") == "1":
        pytest.fail(f"OVERLAY_REQUIRE_NETNS=1 but the NAT lab cannot run here: {reason}",
                    pytrace=False)
    pytest.skip(reason)


_TIMINGS: list[str] = []


@pytest.fixture(scope="session")
def lab_timings() -> list[str]:
    """Lines like "ovt: setup 0.31 s", shown at the end of the run (never asserted on)."""
    return _TIMINGS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TIMINGS:
        terminalreporter.write_sep("-", "NAT lab setup and teardown times")
        for line in _TIMINGS:
            terminalreporter.write_line(line)
