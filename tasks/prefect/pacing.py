"""Paced client-run starts: a burst becomes a queue in the database, started a few at a time.

Every run the Prefect server holds Scheduled, Pending or Running is work waiting on the runner,
and on the embedded SQLite server each start, state change, task run, log batch and event is a
write under one database lock. Starting every client at once (a reconcile after an outage, an
import, a webhook storm) queued the work inside Prefect: runs turned Late while the runner was
full, and the server's writers queued on the lock until they failed ("database is locked") and
the UI's flow-run list waited behind them. Here a start is a row in `run_starts`; runs are
created only while fewer than `run_starts_in_flight` client runs are in flight, and the
start-queued-runs flow keeps starting the rest as earlier runs reach Suspended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.orm import Session

from db.models import RunStart, utcnow
from db.session import transaction
from db.settings import get_settings
from tasks.onboarding import records
from tasks.prefect.runs import (
    create_run,
    no_answer,
    no_answer_note,
    prefect_failures,
    prefect_settings,
    server_reachable,
    unreachable_note,
    when_busy_again,
)

PACER = "start-queued-runs/start-queued-runs"
PACE_SECONDS = 2.0  # how often the pacer looks for freed capacity (the runner polls as often)


@dataclass
class StartReport:
    """What one pass started, and how many clients still wait."""

    started: dict[int, str] = field(default_factory=dict)  # onboarding id -> its run's page
    waiting: int = 0
    unanswered: str | None = None  # why the pass stopped early: the server did not answer


def request_start(session: Session, onboarding_id: int, *, attempt: int = 0) -> bool:
    """Queue a start for the client's run; asking twice queues it once (the newer attempt).
    True when this call queued it or raised its attempt; False when it was queued already.

    The client's row is locked first (on SQLite the transaction holds the write lock anyway), so
    two writers asking at once — two reconciles, a reconcile and `handoff onboard` — are served
    one after the other: the second sees the first's row instead of inserting a duplicate."""
    records.get_onboarding(session, onboarding_id, for_update=True)
    row = session.get(RunStart, onboarding_id, populate_existing=True)
    if row is None:
        session.add(RunStart(onboarding_id=onboarding_id, requested_at=utcnow(),
                             attempt=attempt))
        return True
    if attempt > row.attempt:
        row.attempt = attempt
        return True
    return False


def queued_ids() -> set[int]:
    """Clients whose start is queued."""
    with transaction(read_only=True) as session:
        return set(session.scalars(select(RunStart.onboarding_id)))


def _in_flight_filter(flow_name: str) -> dict[str, Any]:
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    return {"flow_filter": FlowFilter(name=FlowFilterName(any_=[flow_name])),
            "flow_run_filter": FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING,
                                                  StateType.RUNNING])))}


def runs_in_flight(client: Any) -> int:
    """Client runs the runner has to take or is running (a Suspended run holds nothing)."""
    flow_name = get_settings().onboarding_deployment.split("/")[0]
    return int(client.count_flow_runs(**_in_flight_filter(flow_name)))


def _waiting(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(RunStart)) or 0)


def start_queued() -> StartReport:
    """Start the longest-waiting clients while fewer than the limit are in flight."""
    from prefect import get_client

    with prefect_settings(), get_client(sync_client=True) as client:
        free = get_settings().run_starts_in_flight - when_busy_again(
            lambda: runs_in_flight(client))
    report = StartReport()
    with transaction() as session:
        due = list(session.execute(select(RunStart.onboarding_id, RunStart.attempt)
                                   .order_by(RunStart.requested_at, RunStart.onboarding_id)
                                   .limit(max(free, 0))).tuples())
    for onboarding_id, attempt in due:
        try:
            page = create_run(onboarding_id, attempt)
        except prefect_failures() as exc:
            # Not answered in time (the run may even exist): the start stays queued, and the
            # next pass asks again with the same idempotency key. Nothing is lost.
            report.unanswered = no_answer_note(exc)
            break
        with transaction() as session:
            done: CursorResult[Any] = session.execute(delete(RunStart).where(  # type: ignore[assignment]
                RunStart.onboarding_id == onboarding_id, RunStart.attempt == attempt))
        # Two passes at once may both start a client: one run (the same idempotency key), and
        # the pass that took the start off the queue is the one that reports it.
        if done.rowcount:
            report.started[onboarding_id] = page
    with transaction() as session:
        report.waiting = _waiting(session)
    return report


def kick_pacer() -> str:
    """Make sure a start-queued-runs run is draining the queue; say how it stands.

    Best effort, never raises for Prefect: the starts are rows in run_starts whatever happens
    here. Two passes kicking at once (two reconciles, an import beside a reconcile) both create
    a pacer run, and Prefect on its SQLite database refuses the second write with HTTP 503; the
    deployment's concurrency limit of 1 holds any second run that does get through."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    with prefect_settings(), get_client(sync_client=True) as client:
        try:
            if client.count_flow_runs(**_in_flight_filter(PACER.split("/")[0])):
                return "already draining"
            run_deployment(PACER, timeout=0, as_subflow=False)
        except ObjectNotFound:
            return f"deployment {PACER} not served; the reconcile flow starts them"
        except prefect_failures() as exc:
            return f"{no_answer(exc)}; the reconcile flow starts them"
    return "draining"


def start_run(onboarding_id: int, attempt: int = 0) -> str:
    """Start the client's onboarding run, paced: queue its start, start what capacity allows,
    and say what became of this one (started, or queued behind how many)."""
    with transaction() as session:
        request_start(session, onboarding_id, attempt=attempt)
    if not server_reachable():
        return unreachable_note()
    try:
        report = start_queued()
        if report.waiting:
            kick_pacer()
    except prefect_failures() as exc:  # queued: the pacer or the next reconcile starts it
        return no_answer_note(exc)
    if onboarding_id in report.started:
        return report.started[onboarding_id]
    if report.unanswered:
        return report.unanswered
    return (f"queued to start ({report.waiting} clients waiting): runs start as earlier ones "
            "reach Suspended")


def drain(max_seconds: float = 3600.0) -> int:
    """Keep starting queued clients as capacity frees, until none wait; returns how many."""
    deadline = time.monotonic() + max_seconds
    started = 0
    while True:
        try:
            report = start_queued()
        except prefect_failures():  # a busy server dropped one call: the queue is still there
            report = StartReport(waiting=1)
        started += len(report.started)
        if not report.waiting or time.monotonic() > deadline:
            return started
        time.sleep(PACE_SECONDS)
