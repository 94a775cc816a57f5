"""Reconciles at once, in the database: of passes that saw the same clients needing a start or a
restart, one queues each start and logs each restart, whatever their interleaving — on SQLite
(the write lock) and on PostgreSQL (a row lock per client). The Prefect side of the race (two
resumes of one run) is in tests/flow/test_reconcile_race.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import Event, RunStart
from db.playbook import Playbook
from db.session import session_factory, transaction
from tasks.prefect.pacing import request_start
from tasks.prefect.reconcile import queue_starts, remember_run
from tests.db.test_concurrency import _together
from tests.factories import new_onboarding


def _events(kind: str) -> Counter[int | None]:
    with transaction() as session:
        return Counter(session.scalars(select(Event.onboarding_id).where(Event.kind == kind)))


def _queued() -> dict[int, int]:
    with transaction() as session:
        return dict(session.execute(select(RunStart.onboarding_id, RunStart.attempt)).tuples().all())


def test_two_writers_ask_for_the_same_start_at_once(db_url: str, session: Session,
                                                    playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    factory = session_factory(db_url)
    both_in = threading.Barrier(2)

    def ask() -> bool:
        with factory() as s, s.begin():
            both_in.wait()
            queued = request_start(s, ob_id, attempt=0)
            time.sleep(0.3)  # hold the transaction: the other writer acts meanwhile
            return queued

    results = _together(ask, ask)
    assert sorted(results) == [False, True], results  # one queued it, the other saw it queued
    assert _queued() == {ob_id: 0}


def test_concurrent_passes_queue_each_start_and_restart_once(db_url: str, session: Session,
                                                             playbook: Playbook) -> None:
    no_run = [new_onboarding(session, playbook, client=f"No Run {n}") for n in range(4)]
    dead = [new_onboarding(session, playbook, client=f"Dead Run {n}") for n in range(4)]
    dead_runs = {ob_id: str(uuid.uuid4()) for ob_id in dead}
    for ob_id, run_id in dead_runs.items():
        remember_run(ob_id, run_id)
    # What three passes read before any of them acted: no run, or a Crashed one (restarted 0
    # times so far, so attempt 1).
    seen = ([(ob_id, None, 0, None) for ob_id in no_run]
            + [(ob_id, run_id, 1, "Crashed") for ob_id, run_id in dead_runs.items()])

    results = _together(*[lambda: queue_starts(seen)] * 3)

    assert not any(isinstance(r, Exception) for r in results), results
    claimed = Counter(ob_id for queued in results for ob_id in queued)
    assert claimed == Counter({ob_id: 1 for ob_id in [*no_run, *dead]})  # each by one pass
    assert _queued() == {**{i: 0 for i in no_run}, **{i: 1 for i in dead}}
    restarted = _events("flow_run_restarted")
    assert {i: restarted[i] for i in dead} == {i: 1 for i in dead}
    assert not any(restarted[i] for i in no_run)


def test_a_pass_acting_on_an_old_read_changes_nothing(db_url: str, session: Session,
                                                      playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    crashed = str(uuid.uuid4())
    remember_run(ob_id, crashed)
    seen = [(ob_id, crashed, 1, "Crashed")]
    assert queue_starts(seen) == {ob_id}
    assert queue_starts(seen) == set()  # queued already
    # The pacer started the new run and took the start off the queue; a pass that read the
    # client before that still sees the crashed run.
    remember_run(ob_id, str(uuid.uuid4()))
    with transaction() as s:
        s.execute(delete(RunStart).where(RunStart.onboarding_id == ob_id))
    assert queue_starts(seen) == set()
    assert _queued() == {}
    assert _events("flow_run_restarted")[ob_id] == 1


def test_passes_linking_the_same_run_at_once_log_it_once(db_url: str, session: Session,
                                                         playbook: Playbook) -> None:
    ids = [new_onboarding(session, playbook, client=f"Linked {n}") for n in range(10)]
    runs = {ob_id: str(uuid.uuid4()) for ob_id in ids}
    for ob_id in ids:
        results = _together(*[lambda i=ob_id: remember_run(i, runs[i])] * 3)  # type: ignore[misc]
        assert not any(isinstance(r, Exception) for r in results), results
    linked = _events("flow_run_linked")
    assert {i: linked[i] for i in ids} == {i: 1 for i in ids}
