"""The sans-IO cores must not reach for I/O, clocks or threads (CONVENTIONS habit 1).

Every pure module is guarded wherever it lives: all of ``overlay/proto/`` and
the pure cores of the upper layers (listed in ``PURE_MODULES``).  A guarded
module may import from overlay only other guarded modules, so a pure core
cannot reach I/O through a helper either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import overlay
import overlay.proto

FORBIDDEN = {
    "trio", "socket", "sqlite3", "time", "asyncio", "select", "selectors", "threading",
    "subprocess", "os", "secrets", "datetime",
}
ROOT = Path(overlay.__file__).parent
CORE_PACKAGES = [Path(overlay.proto.__file__).parent]
PURE_MODULES = [
    "errors.py", "ids.py", "addresses.py",
    "roles/selection.py", "roles/status.py",
    "chat/envelope.py",
    "directory/protocol.py", "directory/certificates.py", "directory/limits.py",
]


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


def overlay_imports(tree: ast.AST) -> set[str]:
    """The overlay modules ``tree`` imports, as paths relative to the package root."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "overlay" and len(parts) > 1:
                found.add("/".join(parts[1:]) + ".py")
    return found


def core_modules() -> list[Path]:
    in_packages = [p for pkg in CORE_PACKAGES for p in pkg.rglob("*.py")]
    return sorted({*in_packages, *(ROOT / name for name in PURE_MODULES)})


def test_there_are_core_modules_to_check() -> None:
    names = {p.stem for p in core_modules()}
    assert {"codec", "messages", "link", "rtt", "handshake", "sealing", "node", "echo",
            "selection", "envelope", "certificates"} <= names
    assert all(p.is_file() for p in core_modules())


def test_core_modules_import_no_io() -> None:
    offenders = {}
    for path in core_modules():
        bad = imported_roots(ast.parse(path.read_text(), str(path))) & (FORBIDDEN | {"__import__"})
        if bad:
            offenders[str(path)] = sorted(bad)
    assert offenders == {}


def test_core_modules_import_only_core_modules_from_overlay() -> None:
    guarded = {str(p.relative_to(ROOT)) for p in core_modules()}
    offenders = {}
    for path in core_modules():
        impure = overlay_imports(ast.parse(path.read_text(), str(path))) - guarded
        impure = {name for name in impure if not (ROOT / name[:-3] / "__init__.py").exists()}
        if impure:
            offenders[str(path.relative_to(ROOT))] = sorted(impure)
    assert offenders == {}


def test_the_checker_catches_an_offender() -> None:
    tree = ast.parse("import trio\nfrom time import monotonic\nimport os.path\n")
    assert imported_roots(tree) >= {"trio", "time", "os"}
    tree = ast.parse("from overlay.net.link import Link\nimport overlay.proto.codec\n")
    assert overlay_imports(tree) == {"net/link.py", "proto/codec.py"}
