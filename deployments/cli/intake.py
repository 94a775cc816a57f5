"""`handoff intake show`: the questionnaire a client filled in through the portal."""

from __future__ import annotations

from typing import Any

import typer

from deployments.cli.common import JsonOpt, emit, guarded, transaction
from deployments.cli.portal import IdArg

app = typer.Typer()


@app.command("show")
@guarded
def intake_show(onboarding_id: IdArg, as_json: JsonOpt = False) -> None:
    """The client's questionnaire answers and uploaded files (saved or submitted)."""
    from tasks.onboarding.records import get_onboarding
    from tasks.portal import intake

    with transaction() as (session, playbook):
        get_onboarding(session, onboarding_id)
        questionnaire = intake.questionnaire_of(playbook)
        done = intake.submission(session, onboarding_id)
        files = intake.files(session, onboarding_id)
        sections = intake.answer_rows(questionnaire, intake.answers(session, onboarding_id),
                                      files)
        data: dict[str, Any] = {
                "onboarding": onboarding_id,
                "submitted_at": done.submitted_at.isoformat() if done else None,
                "answers": intake.answers(session, onboarding_id),
                "files": [{"id": f.id, "field": f.field_key, "name": f.original_name,
                           "type": f.content_type, "size": f.size, "sha256": f.sha256,
                           "path": f"uploads/{onboarding_id}/{f.stored_name}"} for f in files],
                "sections": sections}
    lines = [f"intake questionnaire of onboarding {onboarding_id}: "
             + (f"submitted {data['submitted_at']}" if done else "not submitted yet")]
    for section in sections:
        lines.append(f"\n{section['title']}")
        lines.extend(f"  {label}: {value}" for label, value in section["rows"])
    emit(as_json, data, "\n".join(lines))
