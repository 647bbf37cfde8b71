"""overlay/chat/ is the chat engine only: it never reaches up into the CLI or the harnesses.

The terminal line editor lives in overlay/cli/chat/, the one-process network
in overlay/lab/local_network.py; both use the engine, and an import the other
way would make the engine depend on its own users.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import overlay.chat

ABOVE_THE_ENGINE = ("overlay.cli", "overlay.lab", "overlay.bench")
"""The CLI, the harnesses (the local network, the NAT lab) and the benchmarks."""
CHAT = Path(overlay.chat.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` names in an import, relative imports resolved."""
    package = "overlay.chat"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def reaches_up(name: str) -> bool:
    return any(name == above or name.startswith(above + ".") for above in ABOVE_THE_ENGINE)


def test_no_chat_module_imports_the_cli_or_a_harness() -> None:
    modules = sorted(CHAT.rglob("*.py"))
    assert {path.name for path in modules} >= {"envelope.py", "history.py", "service.py"}
    offending = {f"{path.name}: {name}" for path in modules
                 for name in imported_modules(path) if reaches_up(name)}
    assert not offending, f"overlay/chat/ imports from above the engine: {sorted(offending)}"


def test_the_terminal_and_the_local_network_are_not_in_the_engine() -> None:
    assert not (CHAT / "terminal.py").exists()
    assert not (CHAT / "local_network.py").exists()


def test_importing_the_engine_loads_nothing_above_it() -> None:
    """Transitively too: a module the engine imports must not pull the CLI in."""
    script = ("import sys, overlay.chat.envelope, overlay.chat.history, overlay.chat.service\n"
              f"print(sorted(m for m in sys.modules if m.startswith({ABOVE_THE_ENGINE!r})))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_the_layering_check_sees_an_offending_import(tmp_path: Path) -> None:
    """The check itself: it catches absolute and relative imports of the CLI and harness."""
    source = tmp_path / "bad.py"
    source.write_text("from overlay.cli.chat.terminal import printable\n"
                      "import overlay.lab.local_network\n"
                      "from ..cli import chat\n")
    assert {name for name in imported_modules(source) if reaches_up(name)} == {
        "overlay.cli.chat.terminal", "overlay.cli.chat.terminal.printable",
        "overlay.lab.local_network", "overlay.cli", "overlay.cli.chat"}
