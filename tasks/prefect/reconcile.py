"""Keep the database and Prefect in step: every active onboarding has a live run that is
waiting only when it must. Running it twice in a row does nothing the second time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sqlalchemy import func, select

from db.models import Event, Onboarding
from db.playbook import get_playbook
from db.session import transaction
from tasks.onboarding import records
from tasks.onboarding.exits import active_exit_problems
from tasks.prefect.runs import WAITING, prefect_settings, remember_run

DEAD = {"CANCELLED", "CRASHED", "FAILED"}


@dataclass
class ReconcileReport:
    """What one reconcile pass changed."""

    started: list[int] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)
    restarted: list[int] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return len(self.started) + len(self.resumed) + len(self.restarted)


def _active() -> list[tuple[int, str | None, bool, int]]:
    """(id, flow_run_id, exit condition met, restarts so far) for every active onboarding, in
    a fixed number of statements whatever their number."""
    playbook = get_playbook()
    with transaction() as session:
        runs = dict(session.connection().execute(select(Onboarding.id, Onboarding.flow_run_id)
                                    .where(Onboarding.status == "active")).tuples().all())
        problems = active_exit_problems(session, playbook)
        restarts: dict[int | None, int] = dict(session.connection().execute(  # type: ignore[arg-type]
            select(Event.onboarding_id, func.count()).where(Event.kind == "flow_run_restarted")
            .group_by(Event.onboarding_id)).all())
    return [(onboarding_id, run_id, not problems.get(onboarding_id, ["not active any more"]),
             int(restarts.get(onboarding_id, 0))) for onboarding_id, run_id in runs.items()]


def reconcile_runs() -> ReconcileReport:
    """Start missing runs, resume runs waiting on a condition already met, restart dead runs."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    report = ReconcileReport()
    active = _active()
    ids = [UUID(run_id) for _, run_id, _, _ in active if run_id]
    states = {}
    with prefect_settings(), get_client(sync_client=True) as client:
        for chunk in range(0, len(ids), 200):
            for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=ids[chunk:chunk + 200])), limit=200):
                states[str(run.id)] = run.state
    with prefect_settings():
        _act(report, active, states)
    return report


def _act(report: ReconcileReport, active: list[tuple[int, str | None, bool, int]],
         states: dict[str, Any]) -> None:
    from tasks.prefect.pacing import kick_pacer, queued_ids, request_start, start_queued

    starts: list[tuple[int, int]] = []
    resumes: list[tuple[int, UUID]] = []
    restarted: list[tuple[int, str | None, str]] = []
    waiting = queued_ids()
    for onboarding_id, run_id, met, restarts in active:
        state = states.get(run_id) if run_id else None
        if onboarding_id in waiting:
            continue  # its start is queued already; the pacer starts it
        if state is None:
            starts.append((onboarding_id, restarts))
            report.started.append(onboarding_id)
        elif state.type.value in DEAD or state.is_completed():
            restarted.append((onboarding_id, run_id, state.name))
            starts.append((onboarding_id, restarts + 1))
            report.restarted.append(onboarding_id)
        elif state.is_paused() and state.name == WAITING and met:
            resumes.append((onboarding_id, UUID(run_id)))  # type: ignore[arg-type]
    _resume(report, resumes)
    # A run to start is queued, then started as capacity allows: after an outage every client
    # may need one at once, and that burst is what the pacer absorbs.
    # Starts queued earlier (say, while Prefect was down) are started here too, not only by the
    # pacer's next pass.
    with transaction() as session:
        for onboarding_id, run_id, state_name in restarted:
            records.log_event(session, "flow_run_restarted", actor="reconcile",
                              onboarding_id=onboarding_id, previous_run=run_id, state=state_name)
        for onboarding_id, attempt in starts:
            request_start(session, onboarding_id, attempt=attempt)
    if starts or waiting:
        paced = start_queued()
        report.started.extend(i for i in paced.started if i in waiting)
        if paced.waiting:
            kick_pacer()


def _resume(report: ReconcileReport, resumes: list[tuple[int, UUID]]) -> None:
    """Resume these suspended runs through one API client (the paged read above saw them
    Suspended, so no second read per run)."""
    if not resumes:
        return
    from prefect import get_client
    from prefect.client.schemas.responses import SetStateStatus

    with get_client(sync_client=True) as client:
        for onboarding_id, run_id in resumes:
            result = client.resume_flow_run(run_id, run_input={})
            if result.status == SetStateStatus.ACCEPT:
                report.resumed.append(onboarding_id)
            elif result.status == SetStateStatus.REJECT:
                reason = getattr(result.details, "reason", None) or "no reason given"
                raise RuntimeError(f"Cannot resume this run: {reason}")
            # ABORT: it woke up between the read and the resume; nothing to do


__all__ = ["ReconcileReport", "reconcile_runs", "remember_run"]
