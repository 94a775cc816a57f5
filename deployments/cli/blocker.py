"""`handoff blocker open|resolve`: blockers, by the playbook's taxonomy."""

from __future__ import annotations

from typing import Annotated

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

app = typer.Typer()


@app.command("open")
@guarded
def blocker_open(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    blocker_type: Annotated[str, typer.Option("--type", help="Blocker type from the playbook.")],
    critical: Annotated[bool, typer.Option("--critical", help="A critical dependency.")] = False,
    affects_timeline: Annotated[bool, typer.Option("--affects-timeline",
                                                   help="It moves the timeline.")] = False,
    note: Annotated[str | None, typer.Option(help="What is blocked.")] = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open a blocker."""
    blocker_id = record_fact(at, lambda session, playbook, opened_at: records.open_blocker(
        session, playbook, onboarding_id, blocker_type, critical=critical, note=note, by=by,
        at=opened_at, affects_timeline=affects_timeline).id)
    emit(as_json, {"blocker": blocker_id, "onboarding": onboarding_id, "type": blocker_type},
         f"blocker {blocker_id} ({blocker_type}{', critical' if critical else ''}) opened "
         f"for onboarding {onboarding_id}")


@app.command("resolve")
@guarded
def blocker_resolve(
    blocker_id: Annotated[int, typer.Argument(help="Blocker id.")],
    note: Annotated[str | None, typer.Option(help="How it was resolved.")] = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Resolve a blocker."""
    onboarding_id = record_fact(at, lambda session, playbook, resolved_at: records.resolve_blocker(
        session, playbook, blocker_id, by=by, at=resolved_at, note=note).onboarding_id)
    flow = nudge(onboarding_id, wait)
    emit(as_json, {"blocker": blocker_id, "resolved": True, "flow": flow},
         f"blocker {blocker_id} resolved\nflow: {flow}")
