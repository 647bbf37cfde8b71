"""The benches sit below the command line: nothing under overlay/bench/ imports overlay.cli.

A bench that reached up for an argument type or a progress bar would drag the
command line into every library caller, and make it impossible to run a bench
without argparse and a terminal.  Walks the syntax tree, so a lazy import
inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import overlay.bench

BENCH_DIR = Path(overlay.bench.__file__).parent


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_bench_module_imports_the_command_line() -> None:
    modules = sorted(BENCH_DIR.rglob("*.py"))
    assert len(modules) > 5
    offenders = {
        str(path.relative_to(BENCH_DIR)): sorted(
            name for name in imported_modules(path)
            if name == "overlay.cli" or name.startswith("overlay.cli."))
        for path in modules}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_guard_sees_an_import_of_the_command_line(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from overlay.cli import progress\n")
    assert "overlay.cli.progress" in imported_modules(probe)
