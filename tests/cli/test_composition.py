"""The `handoff` app is composed from tables; each command lives where its table says."""

from __future__ import annotations

from deployments.cli import COMMANDS, GROUPS, group_app


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
