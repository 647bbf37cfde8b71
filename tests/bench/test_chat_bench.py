"""`overlay bench chat` on a few messages: the figures are there and the path is right."""

from __future__ import annotations

from overlay.bench.chat import measure, render


async def test_a_short_chat_bench_run() -> None:
    result = await measure(20, lambda phase, fraction: None)
    assert result["path"] == {"kind": "relayed", "via": ["sn1", "sn2"]}
    for key in ("chat_relayed", "echo_same_path", "chat_direct"):
        assert result[key]["p50_ms"] > 0
    assert result["chat_direct"]["path"] == "direct"
    assert "chat, relayed (2 supernodes)" in render(result)
