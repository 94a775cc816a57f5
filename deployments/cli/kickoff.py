"""`handoff kickoff schedule`: the kickoff call."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from db.playbook import get_playbook
from db.validation import parse_instant
from deployments.cli.common import ByOpt, JsonOpt, WaitOpt, emit, guarded, nudge, transaction
from tasks.onboarding import records

app = typer.Typer()


@app.command("schedule")
@guarded
def kickoff_schedule(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    kickoff_at: Annotated[str, typer.Option("--when", help="Kickoff time (ISO 8601).")],
    by: ByOpt = "va",
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Schedule or move the kickoff call (a confirmation with a calendar invite goes out)."""
    start = parse_instant(kickoff_at, get_playbook().calendar.tz, "--when", default_now=False)
    with transaction() as (session, playbook):
        records.schedule_kickoff(session, playbook, onboarding_id, kickoff_at=start, by=by,
                                 at=dt.datetime.now(dt.UTC))
    flow = nudge(onboarding_id, wait)
    emit(as_json, {"onboarding": onboarding_id, "kickoff_at": start, "flow": flow},
         f"kickoff for onboarding {onboarding_id} set to {start.isoformat()}\nflow: {flow}")
