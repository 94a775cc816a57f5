"""The `handoff` command line: what a VA types all day. Every command takes --json for scripts.

This module only composes. Each command group is one module here with a module-level Typer
`app`; the tables below say which module holds what, so nothing but this file needs to know the
whole tree (and a module can be imported only when its command runs).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

# `handoff COMMAND`: top-level commands, by the module whose `app` defines them.
COMMANDS = {
    "onboard": "clients", "status": "clients", "import": "clients",
    "sweep": "runs", "reconcile": "runs",
    "memo": "reviews", "kpi": "reviews",
    "demo": "demo",
}
# `handoff GROUP SUBCOMMAND`: group name -> (module, one-line help).
GROUPS = {
    "db": ("db", "The database: migrate, back up, restore."),
    "playbook": ("playbook", "The operating model in deployments/playbook.yaml."),
    "artifact": ("artifact", "Artifacts and checklist items a stage needs."),
    "blocker": ("blocker", "Blockers, by the playbook's taxonomy."),
    "qa": ("qa", "Handoff QA checks."),
    "kickoff": ("kickoff", "The kickoff call."),
    "interruption": ("interruption", "Founder interruptions."),
    "sla": ("sla", "SLA exceptions (a reason is mandatory)."),
    "decision": ("decision", "Decisions reserved to the founder."),
    "owner": ("owner", "Owners: out of office, backups."),
    "followup": ("followup", "Client follow-ups and replies."),
    "incident": ("incident", "Delivery incidents after handoff."),
    "action": ("action", "Corrective actions from KPI threshold breaks."),
    "risk": ("risk", "The risk register: list, open, review, close."),
    "report": ("report", "Reviews: the weekly onboarding review."),
    "deals": ("deals", "Won deals from CRMs and webhooks; poll the CRMs now."),
    "portal": ("portal", "The client portal: each client's link."),
    "intake": ("intake", "The intake questionnaire a client fills in through the portal."),
    "inbox": ("inbox", "The onboarding mailbox: client replies, auto-replies, bounces."),
}


class OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, a missing argument, `-5` taken for an option) and
    arguments that are not UTF-8 get one line on stderr and exit code 2, like every other
    refusal, instead of Click's usage box."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        """Run the command; report a usage error in one line."""
        from typer._click.exceptions import ClickException, NoArgsIsHelpError

        from db.validation import HandoffError, check_utf8

        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode,
                                windows_expand_args, **extra)
        try:
            for arg in argv:
                check_utf8(arg, "argument")
            code = super().main(argv, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        except NoArgsIsHelpError as exc:  # the help is already printed
            code = exc.exit_code
        except (HandoffError, ClickException) as exc:
            message = exc.format_message() if isinstance(exc, ClickException) else str(exc)
            typer.echo(f"error: {' '.join(message.split())}", err=True)
            code = exc.exit_code if isinstance(exc, ClickException) else 2
        sys.exit(code if isinstance(code, int) else 0)


class LazyCommands(OneLineErrors):
    """The `handoff` group whose commands are imported only when one of them runs: a record
    command pays for SQLAlchemy and the playbook, not for Prefect, the calendar or the charts of
    every other command. `handoff --help` lists them all without importing any."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        """Every command and group, in the tables' order."""
        return [*COMMANDS, *GROUPS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The command, built from its module on first use (a help-only stand-in while the
        top-level help is being listed)."""
        if cmd_name not in self.commands and (cmd_name in COMMANDS or cmd_name in GROUPS):
            if self._listing:
                return TyperCommand(cmd_name, help=command_help(cmd_name))
            self.commands[cmd_name] = resolve(cmd_name)
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The top-level help: every command's one-line help, no command module imported."""
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(help="handoff: client onboarding from 'deal closed' to 'ready to deliver'.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  cls=LazyCommands)


@app.callback()
def _handoff() -> None:
    """Nothing to do before a command runs (Typer needs a callback on a group that has no
    commands until one is asked for)."""


def group_app(module: str) -> typer.Typer:
    """The Typer app of deployments/cli/<module>.py."""
    sub: typer.Typer = import_module(f"{__name__}.{module}").app
    return sub


@cache
def resolve(name: str) -> Any:
    """The Click command `handoff NAME` runs, composed from its module exactly as an eager
    `add_typer` of every module would compose it; once per process (a warm CLI spare composed
    it while warming up; Click commands hold no state between invocations)."""
    holder = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    if name in COMMANDS:
        holder.add_typer(group_app(COMMANDS[name]))
    else:
        module, help_text = GROUPS[name]
        holder.add_typer(group_app(module), name=name, help=help_text, no_args_is_help=True)
    return typer.main.get_group(holder).commands[name]


def command_help(name: str) -> str:
    """A command's help as `handoff --help` lists it: a group's line from GROUPS, a top-level
    command's docstring read from its module's source (parsing is cheap; importing is not)."""
    import ast

    if name in GROUPS:
        return GROUPS[name][1]
    source = Path(__file__).with_name(f"{COMMANDS[name]}.py").read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and d.args and isinstance(d.args[0], ast.Constant)
                and d.args[0].value == name for d in node.decorator_list):
            return ast.get_docstring(node) or ""
    return ""


def main() -> None:
    """Entry point for `python -m deployments.cli`."""
    app()
