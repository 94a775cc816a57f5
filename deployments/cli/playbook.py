"""`handoff playbook show`: the operating model as the VA sees it."""

from __future__ import annotations

import typer

from db.playbook import get_playbook
from deployments.cli.common import JsonOpt, emit, guarded

app = typer.Typer()


@app.command("show")
@guarded
def playbook_show(as_json: JsonOpt = False) -> None:
    """Stages, required artifacts, SLAs, blockers and thresholds."""
    playbook = get_playbook()
    if as_json:
        emit(True, playbook.model_dump(mode="json", by_alias=True), "")
        return
    lines = [f"playbook {playbook.version} — {playbook.business.name}",
             f"calendar: {', '.join(playbook.calendar.workdays)} "
             f"{playbook.calendar.hours.start:%H:%M}–{playbook.calendar.hours.end:%H:%M} "
             f"{playbook.calendar.timezone}, holidays {playbook.calendar.holidays.country}", ""]
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
        rhythm = (f"within {sla.within:g}" if sla.within else
                  f"every {sla.every:g}" if sla.every else
                  f"every {sla.every_min:g}–{sla.every_max:g}")
        lines.append(f"  {key}: {rhythm} {sla.unit.value.replace('_', ' ')}")
    lines.append("")
    lines.append("blocker types: " + ", ".join(playbook.blockers))
    lines.append("founder decisions: " + ", ".join(playbook.founder_boundaries))
    emit(False, None, "\n".join(lines))
