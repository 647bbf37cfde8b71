"""The sans-IO cores must not reach for I/O, clocks, threads or randomness (CONVENTIONS habit 1).

Every pure module is guarded wherever it lives, and the list is explicit
(``PURE_MODULES``): a new module in ``overlay/proto/`` must be added to it (a
test fails until it is), and a pure core elsewhere is listed by name.  A
guarded module may import from overlay only other guarded modules, so a pure
core cannot reach I/O through a helper either.

Not guarded, on purpose: ``sim/topology.py`` (reads topology files),
``net/node_status.py`` (its records come from the trio link driver),
``directory/server/peers.py`` (drives the service), and every trio driver.
"""

from __future__ import annotations

import ast
from pathlib import Path

import overlay

FORBIDDEN = {
    "trio", "socket", "sqlite3", "time", "asyncio", "select", "selectors", "threading",
    "subprocess", "os", "secrets", "datetime", "importlib",
}
ROOT = Path(overlay.__file__).parent
PURE_MODULES = [
    # the protocol cores: every module of overlay/proto/
    "proto/__init__.py", "proto/backoff.py", "proto/codec.py", "proto/echo.py",
    "proto/fastpath.py", "proto/forwarding.py", "proto/handshake.py", "proto/link.py",
    "proto/messages.py", "proto/node.py", "proto/punch.py", "proto/reliable.py",
    "proto/route_columns.py", "proto/route_table.py", "proto/routing.py", "proto/rtt.py",
    "proto/sealing.py",
    # shared vocabulary
    "errors.py", "ids.py", "addresses.py", "stats.py",
    # the pure cores of the upper layers
    "directory/protocol.py", "directory/certificates.py", "directory/server/limits.py",
    "directory/server/passwords.py",
    "roles/selection.py", "roles/status.py",
    "chat/envelope.py",
    "cli/chat/editing.py", "cli/chat/screen.py",
    "lab/errors.py", "lab/topology.py",
]


def imported_roots(tree: ast.AST) -> set[str]:
    """The top-level names of every absolute import in ``tree`` (and ``__import__``)."""
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


def overlay_imports(tree: ast.AST, module: str = "") -> set[str]:
    """The overlay modules ``tree`` imports, as paths relative to the package root.

    ``module`` (the importing module's path, e.g. ``proto/link.py``) resolves
    relative imports, so ``from . import x`` is checked like ``import overlay...``.
    """
    found = set()
    package = ["overlay", *module.split("/")[:-1]] if module else ["overlay"]
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                names = [".".join([*base, node.module])]
            else:
                names = [".".join([*base, alias.name]) for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "overlay" and len(parts) > 1:
                found.add("/".join(parts[1:]) + ".py")
    return found


def core_modules() -> list[Path]:
    return sorted(ROOT / name for name in PURE_MODULES)


def test_every_listed_module_exists_and_proto_is_listed_whole() -> None:
    names = {p.stem for p in core_modules()}
    assert {"codec", "messages", "link", "rtt", "handshake", "sealing", "node", "echo",
            "selection", "envelope", "certificates"} <= names
    assert all(p.is_file() for p in core_modules()), [
        name for name in PURE_MODULES if not (ROOT / name).is_file()]
    in_proto = {str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*.py")}
    assert in_proto - set(PURE_MODULES) == set(), "a new proto/ module: add it to PURE_MODULES"


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
        name = str(path.relative_to(ROOT))
        impure = overlay_imports(ast.parse(path.read_text(), str(path)), name) - guarded
        impure = {name for name in impure if not (ROOT / name[:-3] / "__init__.py").exists()}
        if impure:
            offenders[name] = sorted(impure)
    assert offenders == {}


def test_the_checker_catches_an_offender() -> None:
    tree = ast.parse("import trio\nfrom time import monotonic\nimport os.path\n"
                     "from secrets import token_bytes\n")
    assert imported_roots(tree) >= {"trio", "time", "os", "secrets"}
    tree = ast.parse("from overlay.net.link import Link\nimport overlay.proto.codec\n")
    assert overlay_imports(tree) == {"net/link.py", "proto/codec.py"}
    tree = ast.parse("from ..net.link import Link\nfrom . import codec\n")
    assert overlay_imports(tree, "proto/node.py") == {"net/link.py", "proto/codec.py"}
