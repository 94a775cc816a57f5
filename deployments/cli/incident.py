"""`handoff incident log`: delivery incidents after handoff."""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli.common import AtOpt, ByOpt, JsonOpt, emit, guarded, record_fact
from tasks.onboarding import records

app = typer.Typer()


@app.command("log")
@guarded
def incident_log(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    severity: Annotated[str, typer.Option(help="minor, major or critical.")] = "minor",
    note: Annotated[str | None, typer.Option(help="What happened.")] = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Log a delivery incident after handoff."""
    row_id = record_fact(at, lambda session, _playbook, logged_at: records.log_incident(
        session, onboarding_id, severity=severity, note=note, at=logged_at, by=by).id)
    emit(as_json, {"incident": row_id}, f"incident {row_id} logged")
