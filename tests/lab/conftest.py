"""The real-NAT lab tests run only where the lab can; with OVERLAY_REQUIRE_NETNS=1 they must."""

from __future__ import annotations

import os

import pytest

from overlay.lab import available

RUN_TAG = "".join(chr(ord("a") + os.getpid() // 26**i % 26) for i in range(3))
"""Three letters from this test process's id."""


def lab_prefix(base: str) -> str:
    """``base`` (at most 5 letters) tagged with this test process, so that two test
    runs on one machine (CI beside a developer's run) never build, start or tear
    down each other's labs: every namespace and interface name starts with it."""
    assert len(base) <= 5
    return base + RUN_TAG


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
