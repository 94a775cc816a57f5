"""The `handoff` app is composed from tables; each command lives where its table says."""

from __future__ import annotations

import subprocess
import sys

from deployments.cli import COMMANDS, GROUPS, command_help, group_app, resolve


def test_top_level_commands_live_where_the_table_says() -> None:
    modules = dict.fromkeys(COMMANDS.values())
    defined = {c.name: m for m in modules for c in group_app(m).registered_commands}
    assert defined == COMMANDS


def test_every_group_module_defines_commands_and_nothing_at_the_top() -> None:
    top = set(COMMANDS.values())
    for name, (module, help_text) in GROUPS.items():
        assert module not in top, name
        assert group_app(module).registered_commands, name
        assert help_text.endswith("."), name


def test_the_top_level_help_lists_each_command_with_its_own_help() -> None:
    for name in [*COMMANDS, *GROUPS]:
        assert command_help(name) == resolve(name).help, name
        assert command_help(name), name


def test_a_command_imports_only_its_own_module() -> None:
    """`handoff --help` imports no command module, and a record command only its own (and
    neither Prefect nor its HTTP client)."""
    probe = ("import sys; from typer.testing import CliRunner; from deployments.cli import app; "
             "r = CliRunner().invoke(app, sys.argv[1:]); "
             "print(r.exit_code, sorted(m for m in sys.modules if m.startswith("
             "('deployments.cli.', 'prefect', 'httpx'))))")
    listing = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True,
                             text=True, check=True).stdout
    assert listing.strip() == "0 []"
    one = subprocess.run([sys.executable, "-c", probe, "artifact", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert one.strip() == "0 ['deployments.cli.artifact', 'deployments.cli.common']"
