"""`handoff action close`: corrective actions from KPI threshold breaks."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from deployments.cli.common import ByOpt, JsonOpt, emit, guarded, transaction
from tasks.onboarding import records

app = typer.Typer()


@app.command("close")
@guarded
def action_close(
    action_id: Annotated[int, typer.Argument(help="Corrective action id.")],
    note: Annotated[str | None, typer.Option(help="What was done.")] = None,
    by: ByOpt = "founder",
    as_json: JsonOpt = False,
) -> None:
    """Close a corrective action with a note."""
    with transaction() as (session, _playbook):
        records.close_action(session, action_id, note=note, by=by, at=dt.datetime.now(dt.UTC))
    emit(as_json, {"action": action_id, "closed": True}, f"corrective action {action_id} closed")
