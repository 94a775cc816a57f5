"""`handoff playbook show`: the operating model as the VA sees it; `check`: what a candidate
file changes for the clients in flight; `apply`: after it is in place."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from db.playbook import get_playbook
from deployments.cli.common import ByOpt, JsonOpt, emit, guarded, transaction

app = typer.Typer()


@app.command("show")
@guarded
def playbook_show(as_json: JsonOpt = False) -> None:
    """Stages, required artifacts, SLAs, blockers and thresholds."""
    playbook = get_playbook()
    if as_json:
        emit(True, playbook.model_dump(mode="json", by_alias=True), "")
        return
    from tasks.onboarding.playbook_change import calendar_words, sla_words

    lines = [f"playbook {playbook.version} — {playbook.business.name}",
             f"calendar: {calendar_words(playbook.calendar)}", ""]
    for number, stage in enumerate(playbook.stages, 1):
        lines.append(f"{number}. {stage.name} [{stage.key}] lane {stage.lane}, SLA "
                     f"{stage.sla.within:g} {stage.sla.unit.value.replace('_', ' ')}")
        for item in playbook.required_items(stage.key):
            lines.append(f"     - {item.key}: {item.label} (lane {item.lane})")
        for gate in stage.gates:
            lines.append(f"     * gate: {gate.value}")
    lines.append("")
    lines.append("SLAs:")
    for key, sla in playbook.slas.items():
        lines.append(f"  {key}: {sla_words(sla)}")
    lines.append("")
    lines.append("blocker types: " + ", ".join(playbook.blockers))
    lines.append("founder decisions: " + ", ".join(playbook.founder_boundaries))
    emit(False, None, "\n".join(lines))


@app.command("check")
@guarded
def playbook_check(
    file: Annotated[Path | None, typer.Argument(
        help="The candidate playbook (default: the file in force).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a candidate playbook and say what it changes for the clients in flight."""
    from db.playbook import load_playbook
    from db.settings import get_settings
    from tasks.mail.render import render_page
    from tasks.onboarding.playbook_change import playbook_change

    path = file or get_settings().playbook_path
    candidate = load_playbook(path)
    with transaction(read_only=True) as (session, current):
        change = playbook_change(session, current, candidate)
    emit(as_json, change, render_page("reports/playbook_check.txt",
                                      {"candidate": str(path), "change": change}).rstrip())


@app.command("apply")
@guarded
def playbook_apply(
    apply_now: Annotated[bool, typer.Option(
        "--apply-now", help="Hold clients already in a stage to its new required items too "
                            "(otherwise they apply from the next stage entry).")] = False,
    by: ByOpt = "va",
    as_json: JsonOpt = False,
) -> None:
    """After the playbook file changed: recompute every active client's next action and due
    date; with --apply-now, new required items also hold clients already in the stage."""
    from db.models import utcnow
    from tasks.mail.render import render_page
    from tasks.onboarding import records

    with transaction() as (session, playbook):
        active, changed = records.apply_playbook(session, playbook, actor=by, at=utcnow(),
                                                 now=apply_now)
    result = {"playbook_version": playbook.version, "apply_now": apply_now, "active": active,
              "changed": [{"id": k, "added": v} for k, v in changed.items()]}
    emit(as_json, result, render_page("reports/playbook_apply.txt", result).rstrip())
