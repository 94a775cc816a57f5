"""`handoff sla exception`: justified SLA exceptions."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from deployments.cli.common import ByOpt, JsonOpt, emit, guarded, transaction
from tasks.onboarding import records

app = typer.Typer()


@app.command("exception")
@guarded
def sla_exception(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    sla: Annotated[str, typer.Option(help="SLA or stage key.")],
    reason: Annotated[str | None, typer.Option(help="Rationale (mandatory).")] = None,
    by: ByOpt = "va",
    as_json: JsonOpt = False,
) -> None:
    """Log a justified SLA exception."""
    with transaction() as (session, playbook):
        row = records.log_sla_exception(session, playbook, onboarding_id, sla_key=sla,
                                        reason=reason, by=by, at=dt.datetime.now(dt.UTC))
        row_id = row.id
    emit(as_json, {"exception": row_id}, f"SLA exception {row_id} logged for {sla}")
