"""`handoff followup log`: client follow-ups and replies."""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli.common import AtOpt, ByOpt, JsonOpt, emit, guarded, record_fact
from tasks.onboarding import records

app = typer.Typer()


@app.command("log")
@guarded
def followup_log(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    kind: Annotated[str, typer.Option(help="followup_request, response or clarification.")]
    = "followup_request",
    template: Annotated[str | None, typer.Option(help="Message that prompted it.")] = None,
    note: Annotated[str | None, typer.Option(help="What the client said.")] = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Log a client follow-up request (or a reply, or a clarification request)."""
    row_id = record_fact(at, lambda session, _playbook, logged_at: records.log_client_response(
        session, onboarding_id, kind=kind, template=template, note=note, at=logged_at, by=by).id)
    emit(as_json, {"id": row_id, "kind": kind}, f"{kind} {row_id} logged")
