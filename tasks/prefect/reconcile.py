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
from tasks.prefect.runs import WAITING, prefect_settings, remember_run, when_busy_again

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
    with transaction(read_only=True) as session:  # SQLite: no write lock while reading them all
        rows = session.connection().execute(
            select(Onboarding.id, Onboarding.flow_run_id, Onboarding.stage, Onboarding.stage_items)
            .where(Onboarding.status == "active")).tuples().all()
        runs = {onboarding_id: run_id for onboarding_id, run_id, _, _ in rows}
        problems = active_exit_problems(session, playbook,
                                        [(i, stage, items) for i, _, stage, items in rows])
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


Start = tuple[int, str | None, int, str | None]  # onboarding, run seen, attempt, dead state


def _act(report: ReconcileReport, active: list[tuple[int, str | None, bool, int]],
         states: dict[str, Any]) -> None:
    from tasks.prefect.pacing import kick_pacer, queued_ids, start_queued

    starts: list[Start] = []
    resumes: list[tuple[int, UUID, UUID]] = []
    waiting = queued_ids()
    for onboarding_id, run_id, met, restarts in active:
        state = states.get(run_id) if run_id else None
        if onboarding_id in waiting:
            continue  # its start is queued already; the pacer starts it
        if state is None:
            starts.append((onboarding_id, run_id, restarts, None))
        elif state.type.value in DEAD or state.is_completed():
            starts.append((onboarding_id, run_id, restarts + 1, state.name))
        elif state.is_paused() and state.name == WAITING and met:
            resumes.append((onboarding_id, UUID(run_id), state.id))  # type: ignore[arg-type]
    _resume(report, resumes)
    # A run to start is queued, then started as capacity allows: after an outage every client
    # may need one at once, and that burst is what the pacer absorbs.
    queued = queue_starts(starts)
    for onboarding_id, _, _, dead in starts:
        if onboarding_id in queued:
            (report.started if dead is None else report.restarted).append(onboarding_id)
    # Starts queued earlier (say, while Prefect was down) are started here too, not only by the
    # pacer's next pass.
    if starts or waiting:
        paced = start_queued()
        report.started.extend(i for i in paced.started if i in waiting)
        if paced.waiting:
            kick_pacer()


def queue_starts(starts: list[Start]) -> set[int]:
    """Queue these starts and restarts (logging each restart); return the clients queued.

    They were decided on a read taken before, and another reconcile (a VA's, the served flow's)
    may have acted on the same clients since. So each client's row is locked and read again
    (SQLite: the transaction holds the write lock), in id order so that passes never deadlock:
    a start is queued only while the client is active on the very run this pass saw, and not
    queued already. Of passes running at once, one queues each start and logs each restart; the
    others leave that client alone."""
    from tasks.prefect.pacing import request_start

    queued: set[int] = set()
    if not starts:
        return queued
    with transaction() as session:
        for onboarding_id, seen_run, attempt, dead in sorted(starts, key=lambda s: s[0]):
            ob = records.get_onboarding(session, onboarding_id, for_update=True)
            if ob.status != "active" or ob.flow_run_id != seen_run:
                continue  # started, restarted or closed since this pass read it
            if not request_start(session, onboarding_id, attempt=attempt):
                continue  # another pass queued it first
            if dead is not None:
                records.log_event(session, "flow_run_restarted", actor="reconcile",
                                  onboarding_id=onboarding_id, previous_run=seen_run, state=dead)
            queued.add(onboarding_id)
    return queued


def _resume(report: ReconcileReport, resumes: list[tuple[int, UUID, UUID]]) -> None:
    """Resume these suspended runs through one API client (the paged read above saw them
    Suspended, so no second read per run unless a resume is answered 503)."""
    if not resumes:
        return
    from prefect import get_client

    with get_client(sync_client=True) as client:
        for onboarding_id, run_id, seen_state in resumes:
            if resume_waiting(client, run_id, seen_state):
                report.resumed.append(onboarding_id)


def resume_waiting(client: Any, run_id: UUID, seen_state: UUID) -> bool:
    """Resume the run if it still waits in the state `seen_state`; True when this call woke it.

    Another reconcile, a VA's wake-up or the UI may resume the same run at the same moment.
    Prefect answers the later resume ABORT (not paused any more) — or, on its SQLite database,
    HTTP 503: both resumes read the run Suspended, the first one's write went through and
    SQLite refused the second one's ("database is locked"), which Prefect reports as "Service
    Unavailable". A busy answer is tried again as every Prefect call is (`when_busy_again`), the
    run read again first: woken since (its state changed), there is nothing left to do. A
    refusal (REJECT) of a run that has moved on is the same collision; of a run still waiting,
    it is an error.
    """
    from prefect.client.schemas.responses import SetStateStatus

    tries = 0

    def resume() -> Any:
        nonlocal tries
        tries += 1
        if tries > 1 and _moved_on(client, run_id, seen_state):
            return None  # woken by someone else meanwhile
        return client.resume_flow_run(run_id, run_input={})

    result = when_busy_again(resume)
    if result is None:
        return False
    if result.status == SetStateStatus.REJECT:
        if _moved_on(client, run_id, seen_state):
            return False  # refused because another resume moved it on first
        reason = getattr(result.details, "reason", None) or "no reason given"
        raise RuntimeError(f"Cannot resume this run: {reason}")
    # ABORT: it woke up between the read and the resume; nothing to do
    return bool(result.status == SetStateStatus.ACCEPT)


def _moved_on(client: Any, run_id: UUID, seen_state: UUID) -> bool:
    """Whether the run has left the state this pass saw it in (someone else woke it)."""
    state = client.read_flow_run(run_id).state
    return state is None or bool(state.id != seen_state)


__all__ = ["ReconcileReport", "queue_starts", "reconcile_runs", "remember_run", "resume_waiting"]
