"""`handoff interruption log`: founder interruptions."""

from __future__ import annotations

from typing import Annotated

import typer

from db.validation import HandoffError
from deployments.cli.common import AtOpt, ByOpt, JsonOpt, emit, guarded, record_fact
from tasks.onboarding import records

app = typer.Typer()


@app.command("log")
@guarded
def interruption_log(
    category: Annotated[str, typer.Option(help="Interruption category (playbook).")],
    avoidable: Annotated[bool | None, typer.Option("--avoidable/--required",
                                                   help="Could the system have handled it?")]
    = None,
    onboarding_id: Annotated[int | None, typer.Option("--onboarding", help="Onboarding id.")]
    = None,
    lane: Annotated[str | None, typer.Option(help="Lane it came from.")] = None,
    note: Annotated[str | None, typer.Option(help="What happened.")] = None,
    by: ByOpt = "founder",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Count one founder interruption."""
    if avoidable is None:
        raise HandoffError("say --avoidable or --required")
    row_id = record_fact(at, lambda session, playbook, logged_at: records.log_interruption(
        session, playbook, category=category, avoidable=avoidable, onboarding_id=onboarding_id,
        lane=lane, note=note, at=logged_at, by=by).id)
    emit(as_json, {"interruption": row_id, "category": category, "avoidable": avoidable},
         f"interruption {row_id} logged ({category}, {'avoidable' if avoidable else 'required'})")
