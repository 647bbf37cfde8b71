"""`overlay bench chat` on a few messages: the figures are there and the path is right."""

from __future__ import annotations

from overlay.bench.chat import ChatConfig, run
from overlay.cli.bench_render import render_chat


async def test_a_short_chat_bench_run() -> None:
    report = await run(ChatConfig(messages=20), lambda phase, fraction: None)
    result = report.to_json()
    assert result["path"] == {"kind": "relayed", "via": ["sn1", "sn2"]}
    for key in ("chat_relayed", "echo_same_path", "chat_direct"):
        assert result[key]["p50_ms"] > 0
    assert result["chat_direct"]["path"] == "direct"
    assert "chat, relayed (2 supernodes)" in render_chat(report)
