"""The `handoff` command line: what a VA types all day. Every command takes --json for scripts.

This module only composes. Each command group is one module here with a module-level Typer
`app`; the tables below say which module holds what, so nothing but this file needs to know the
whole tree (and a module can be imported only when its command runs).
"""

from __future__ import annotations

from importlib import import_module

import typer

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
    "report": ("report", "Reviews: the weekly onboarding review."),
    "deals": ("deals", "Won deals from CRMs and webhooks; poll the CRMs now."),
    "portal": ("portal", "The client portal: each client's link."),
    "intake": ("intake", "The intake questionnaire a client fills in through the portal."),
    "inbox": ("inbox", "The onboarding mailbox: client replies, auto-replies, bounces."),
}

app = typer.Typer(help="handoff: client onboarding from 'deal closed' to 'ready to deliver'.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def group_app(module: str) -> typer.Typer:
    """The Typer app of deployments/cli/<module>.py."""
    sub: typer.Typer = import_module(f"{__name__}.{module}").app
    return sub


for _module in dict.fromkeys(COMMANDS.values()):
    app.add_typer(group_app(_module))
for _name, (_module, _help) in GROUPS.items():
    app.add_typer(group_app(_module), name=_name, help=_help, no_args_is_help=True)


def main() -> None:
    """Entry point for `python -m deployments.cli`."""
    app()
