"""The sans-IO cores must not reach for I/O, clocks or threads (CONVENTIONS habit 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import overlay.proto

FORBIDDEN = {
    "trio", "socket", "sqlite3", "time", "asyncio", "select", "selectors", "threading",
    "subprocess", "os", "secrets", "datetime",
}
CORE_PACKAGES = [Path(overlay.proto.__file__).parent]


def imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            roots.add("__import__")
    return roots


def core_modules() -> list[Path]:
    return sorted(p for pkg in CORE_PACKAGES for p in pkg.rglob("*.py"))


def test_there_are_core_modules_to_check() -> None:
    names = {p.stem for p in core_modules()}
    assert {"codec", "messages", "link", "rtt", "handshake", "sealing"} <= names


def test_core_modules_import_no_io() -> None:
    offenders = {}
    for path in core_modules():
        bad = imported_roots(ast.parse(path.read_text(), str(path))) & (FORBIDDEN | {"__import__"})
        if bad:
            offenders[str(path)] = sorted(bad)
    assert offenders == {}


def test_the_checker_catches_an_offender() -> None:
    tree = ast.parse("import trio\nfrom time import monotonic\nimport os.path\n")
    assert imported_roots(tree) >= {"trio", "time", "os"}
