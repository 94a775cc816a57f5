"""`handoff qa record`: handoff QA checks."""

from __future__ import annotations

from typing import Annotated

import typer

from db.validation import HandoffError
from deployments.cli.common import (
    AtOpt,
    ByOpt,
    JsonOpt,
    WaitOpt,
    emit,
    guarded,
    nudge,
    record_fact,
)
from tasks.onboarding import records

app = typer.Typer()


@app.command("record")
@guarded
def qa_record(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    passed: Annotated[bool | None, typer.Option("--pass/--fail", help="QA outcome.")] = None,
    reason: Annotated[str | None, typer.Option(help="Rework reason (required on --fail).")]
    = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Record a QA check (--pass or --fail --reason)."""
    if passed is None:
        raise HandoffError("say --pass or --fail")
    review_id = record_fact(at, lambda session, _playbook, checked_at: records.record_qa(
        session, onboarding_id, passed=passed, reason=reason, by=by, at=checked_at).id)
    flow = nudge(onboarding_id, wait)
    emit(as_json, {"qa": review_id, "passed": passed, "flow": flow},
         f"QA {'passed' if passed else 'failed'} recorded for onboarding {onboarding_id}\n"
         f"flow: {flow}")
