"""Concurrency and database faults: database constraints decide, not luck — on both databases."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from db.lease import LeaseHeld, lease
from db.models import Artifact, Communication
from db.playbook import Playbook
from db.session import session_factory
from db.settings import get_settings
from tasks.comms.sweeps import run_sweep
from tasks.onboarding import records
from tests.factories import CLOSED, new_onboarding
from tests.smtp_server import LoopbackSmtp

AS_OF = CLOSED + dt.timedelta(hours=1)  # Monday 11:00 New York: the welcome is due


def _together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at the same moment on threads; return results or exceptions."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - the test inspects what happened
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_vas_record_the_same_client_at_once(db_url: str, session: Session,
                                                playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    factory = session_factory(db_url)

    def record(keys: list[str], by: str) -> list[bool]:
        with factory() as s, s.begin():
            return [records.record_artifact(s, playbook, ob_id, k, by=by, at=AS_OF)[1]
                    for k in keys]

    for _ in range(20):  # different items for the same client, and the same item twice
        results = _together(lambda: record(["deal_terms_confirmed"], "va1"),
                            lambda: record(["deal_terms_confirmed",
                                            "scope_and_timeline_captured"], "va2"))
        assert not any(isinstance(r, Exception) for r in results), results
    with factory() as s, s.begin():
        keys = sorted(s.scalars(select(Artifact.key).where(Artifact.onboarding_id == ob_id)))
        ob = records.get_onboarding(s, ob_id)
        assert keys == ["deal_terms_confirmed", "onboarding_owner_assigned",
                        "scope_and_timeline_captured"]  # nothing lost, nothing doubled
        assert records.missing_items(s, playbook, ob) == []


def test_two_sweeps_at_once_send_each_message_once(db_url: str, session: Session,
                                                   playbook: Playbook,
                                                   smtp: LoopbackSmtp) -> None:
    for n in range(5):
        new_onboarding(session, playbook, client=f"Client {n}",
                       contacts=[f"c{n}@clients.example"])
    factory = session_factory(db_url)
    results = _together(*[lambda: run_sweep(factory, playbook, get_settings(), AS_OF)] * 3)
    skipped = [r for r in results if isinstance(r, LeaseHeld)]
    ran = [r for r in results if not isinstance(r, Exception)]
    assert ran and len(ran) + len(skipped) == 3, results
    again = run_sweep(factory, playbook, get_settings(), AS_OF)
    assert again.queued_messages == again.sent == 0
    welcomes = [m for m in smtp.messages if "Welcome" in str(m.message["Subject"])]
    assert sorted(r for m in welcomes for r in m.rcpt_tos) == [
        f"c{n}@clients.example" for n in range(5)]


def test_a_held_lease_is_refused_then_freed(db_url: str) -> None:
    factory = session_factory(db_url)
    with lease(factory, "sweep:test"):
        with pytest.raises(LeaseHeld, match="already running elsewhere"):
            with lease(factory, "sweep:test"):
                pass
    with lease(factory, "sweep:test"):
        pass  # released on exit, so it can be taken again


def test_database_locked_mid_sweep_fails_cleanly_and_next_sweep_completes(
        sqlite_url: str, playbook: Playbook, smtp: LoopbackSmtp,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from db.session import dispose_all
    from tasks.comms import sweeps

    monkeypatch.setenv("HANDOFF_SQLITE_BUSY_MS", "300")
    get_settings.cache_clear()
    dispose_all()
    factory = session_factory(sqlite_url)
    with factory() as s:
        for n in range(3):
            new_onboarding(s, playbook, client=f"Locked {n}", contacts=[f"l{n}@x.example"])

    # Another writer grabs the database after the sweep queued its messages and holds it for a
    # second: longer than the sweep will wait.
    other = sqlite3.connect(sqlite_url.split("///", 1)[1], timeout=5, check_same_thread=False)
    real_deliver = sweeps.deliver

    def deliver_into_a_lock(*args: Any, **kwargs: Any) -> Any:
        other.execute("BEGIN EXCLUSIVE")
        threading.Timer(1.0, other.rollback).start()
        return real_deliver(*args, **kwargs)

    monkeypatch.setattr(sweeps, "deliver", deliver_into_a_lock)
    with pytest.raises(OperationalError, match="locked"):
        run_sweep(factory, playbook, get_settings(), AS_OF)
    monkeypatch.setattr(sweeps, "deliver", real_deliver)
    assert smtp.messages == []
    with factory() as s:  # queued, none claimed: the failed pass left nothing half-done
        assert sorted(s.scalars(select(Communication.status))) == ["queued"] * 3
    report = run_sweep(factory, playbook, get_settings(), AS_OF)
    assert report.sent == 3 and report.queued_messages == 0
    assert sorted(r for m in smtp.messages for r in m.rcpt_tos) == [
        f"l{n}@x.example" for n in range(3)]
    other.close()


def test_unreachable_database_fails_cleanly(playbook: Playbook, home: Any) -> None:
    factory = session_factory("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(OperationalError):
        run_sweep(factory, playbook, get_settings(), AS_OF)
