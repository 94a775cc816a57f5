"""`handoff artifact add`: artifacts and checklist items a stage needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

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

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.orm import Session

    from db.playbook import Playbook

app = typer.Typer()


@app.command("add")
@guarded
def artifact_add(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    keys: Annotated[list[str], typer.Argument(help="Artifact key(s) (see 'handoff playbook "
                                                   "show').")],
    note: Annotated[str | None, typer.Option(help="Note or link.")] = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Record that artifacts or checklist items exist (all of them, or none)."""

    def write(session: Session, playbook: Playbook,
              recorded_at: dt.datetime) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for key in keys:
            artifact, created = records.record_artifact(session, playbook, onboarding_id, key,
                                                        by=by, at=recorded_at, note=note)
            results.append({"key": key, "created": created, "recorded_at": artifact.recorded_at})
        return results

    results = record_fact(at, write)
    flow = nudge(onboarding_id, wait)
    lines = [f"{r['key']} {'recorded' if r['created'] else 'was already recorded'} for "
             f"onboarding {onboarding_id}" for r in results]
    data: dict[str, Any] = {"onboarding": onboarding_id, "artifacts": results, "flow": flow}
    if len(results) == 1:
        data.update(results[0])
    emit(as_json, data, "\n".join(lines) + f"\nflow: {flow}")
