"""`handoff decision record`: decisions reserved to the founder."""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli.common import AtOpt, JsonOpt, emit, guarded, record_fact
from tasks.onboarding import records

app = typer.Typer()


@app.command("record")
@guarded
def decision_record(
    boundary: Annotated[str, typer.Option(help="Founder boundary key (playbook).")],
    decision: Annotated[str, typer.Option(help="What was decided.")],
    by: Annotated[str, typer.Option(help="Decider's email (must be the founder).")],
    onboarding_id: Annotated[int | None, typer.Option("--onboarding", help="Onboarding id.")]
    = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a decision reserved to the founder."""
    row_id = record_fact(at, lambda session, playbook, decided_at: records.record_founder_decision(
        session, playbook, boundary=boundary, decision=decision, decided_by=by,
        onboarding_id=onboarding_id, at=decided_at).id)
    emit(as_json, {"decision": row_id, "boundary": boundary},
         f"decision {row_id} recorded ({boundary})")
