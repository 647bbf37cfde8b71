"""Benchmark pictures: real PNGs of the expected size, and one clear error without matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from overlay.bench import plots
from overlay.errors import ConfigError
from tests.bench.test_transport_bench import png_size


def transport_report() -> dict[str, object]:
    def figures(rate: float, rtt: float) -> dict[str, float]:
        return {"goodput_msgs_s": rate, "goodput_mb_s": rate / 1000, "rtt_p50_ms": rtt,
                "rtt_p99_ms": 2 * rtt}

    hops = [{"relays": relays, "overlay": figures(5000 / (relays + 1), 0.3 * (relays + 1)),
             "baseline": figures(10000 / (relays + 1), 0.1 * (relays + 1)),
             "goodput_ratio": 0.5} for relays in (0, 1, 3)]
    return {"mode": "in-process", "size": 1024, "count": 10, "pings": 1, "hops": hops}


def test_transport_picture_is_a_png_of_the_stated_size(tmp_path: Path) -> None:
    [path] = plots.transport(transport_report(), tmp_path / "new")
    assert path == tmp_path / "new" / "transport.png"
    assert png_size(path) == (int(plots.SIZE_INCHES[0] * plots.DPI),
                              int(plots.SIZE_INCHES[1] * plots.DPI))


def test_an_unwritable_directory_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot create"):
        plots.transport(transport_report(), blocker / "sub")


def test_without_matplotlib_the_error_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'matplotlib>=3.8'"):
        plots.check_available()
