"""The entry point: one module imported per command, options before the command, `overlay id`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from overlay.cli import main
from overlay.ids import Identity
from overlay.state import KEY_FILE, load_identity
from tests.procs import run_overlay, short_tempdir


def test_the_command_table_matches_what_the_modules_register() -> None:
    """COMMANDS lists every command with its module's own help line, none missing."""
    registered = {}
    common = argparse.ArgumentParser(add_help=False)
    for module_name in {module for _, module, _ in main.COMMANDS}:
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers()
        main._module(module_name).add_parser(subparsers, common)
        for action in subparsers._choices_actions:
            registered[action.dest] = (module_name, action.help)
    assert registered == {command: (module, help_text)
                          for command, module, help_text in main.COMMANDS}


IMPORTS = """
import sys
from overlay.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("networkx", "overlay.bench", "overlay.sim", "overlay.chat",
                           "overlay.directory.server.listener", "trio.testing") if m in sys.modules)
print(" ".join(heavy) or "none")
"""


def imported_heavy_modules(*args: str) -> str:
    result = subprocess.run([sys.executable, "-c", IMPORTS, *args], capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_a_command_imports_only_its_own_module() -> None:
    assert imported_heavy_modules("--help") == "none"
    assert imported_heavy_modules("status", "--help") == "none"
    assert imported_heavy_modules("ping", "--help") == "none"
    assert imported_heavy_modules("id", "--help") == "none"
    # A bench's measuring code, the simulator and networkx load only when a bench runs.
    assert imported_heavy_modules("bench", "--help") == "none"
    assert imported_heavy_modules("bench", "routing", "--help") == "none"
    assert imported_heavy_modules("bench", "hybrid", "--help") == "none"


def test_top_level_help_lists_every_command() -> None:
    result = run_overlay("--help")
    assert result.returncode == 0
    for command, _, help_text in main.COMMANDS:
        assert command in result.stdout
        assert help_text.split()[0] in result.stdout
    assert run_overlay("--version").stdout.startswith("overlay ")


def test_verbosity_may_come_before_the_command() -> None:
    state = short_tempdir()
    for args in (("-v", "status"), ("-vv", "status", "-q"), ("-q", "status")):
        result = run_overlay(*args, "--state", str(state))
        assert result.returncode == 1, result.stderr  # a clear refusal, not a usage error
        assert "no node is running" in result.stderr and "Traceback" not in result.stderr
    assert run_overlay("-x", "status").returncode == 2


def test_id_prints_the_node_id_and_key_and_creates_nothing() -> None:
    state = short_tempdir()
    missing = run_overlay("id", "--state", str(state))
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"overlay id: no node key in {state} yet: `overlay node --state {state}` "
        "(or any command that runs a node there) creates one")
    assert not (state / KEY_FILE).exists()
    identity: Identity = load_identity(state)
    shown = run_overlay("id", "--state", str(state))
    assert shown.returncode == 0
    assert shown.stdout.splitlines()[:2] == [f"node id     {identity.node_id.hex()}",
                                             f"public key  {identity.public_key.hex()}"]
    assert "(mode 600)" in shown.stdout
    as_json = json.loads(run_overlay("id", "--state", str(state), "--json").stdout)
    assert as_json["node_id"] == identity.node_id.hex()
    assert as_json["public_key"] == identity.public_key.hex()
    (state / KEY_FILE).chmod(0o644)
    exposed = run_overlay("id", "--state", str(state))
    assert exposed.returncode == 1 and "chmod 600" in exposed.stderr
    assert "Traceback" not in exposed.stderr


def test_listen_shows_text_with_newlines_and_hides_control_characters() -> None:
    from overlay.cli.messaging import render_message

    assert render_message("abcdef0123", b"hi\n") == "from abcdef01: hi"
    assert render_message("abcdef0123", b"a\nb\tc\n\n") == "from abcdef01: a\n  b\tc\n  "
    assert render_message("abcdef0123", b"\x1b[2Jgotcha") == "from abcdef01: 10 bytes (not text)"
    assert render_message("abcdef0123", b"\xff\xfe") == "from abcdef01: 2 bytes (not text)"
