"""The demo is marked and silent: its fictional clients never get mail (recorded as suppressed,
so clocks and KPIs read as if sent), and `clear_demo` removes them and only them. On SQLite and
PostgreSQL, with a real SMTP server listening."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.models import Communication, Event, Onboarding
from db.playbook import Playbook
from db.session import session_factory
from db.settings import get_settings
from tasks.comms.sweeps import queue_due
from tasks.history.demo import clear_demo, load_demo
from tasks.mail.delivery import deliver
from tests.factories import new_onboarding
from tests.smtp_server import LoopbackSmtp

NOW = dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)  # a Tuesday, 10:00 in New York


@pytest.fixture
def demo_and_real(session: Session, playbook: Playbook) -> tuple[set[int], int]:
    real = new_onboarding(session, playbook, client="Real Dental",
                          contacts=["pat@real.example"], closed_at=NOW - dt.timedelta(hours=1))
    with session.begin():
        load_demo(session, playbook, n=12, months=2, end=NOW, seed=3)
    with session.begin():
        demo = set(session.scalars(select(Onboarding.id).where(Onboarding.demo)))
    return demo, real


def test_demo_clients_get_no_mail_and_real_ones_do(session: Session, playbook: Playbook,
                                                   smtp: LoopbackSmtp,
                                                   demo_and_real: tuple[set[int], int]) -> None:
    demo, real = demo_and_real
    assert len(demo) == 12 and real not in demo
    factory = session_factory()
    later = NOW + dt.timedelta(days=3)
    with factory() as s, s.begin():
        queue_due(s, playbook, later)
    with factory() as s, s.begin():
        waiting = dict(s.execute(select(Communication.onboarding_id, func.count())
                                 .where(Communication.status == "queued")
                                 .group_by(Communication.onboarding_id)).all())
    assert set(waiting) & demo, "the sweep queued nothing for the demo: the test proves nothing"
    report = deliver(factory, playbook, get_settings(), now=later)
    recipients = {r for m in smtp.messages for r in m.rcpt_tos}
    assert "pat@real.example" in recipients
    assert not any(r.endswith("demo.example") or "hello@" in r for r in recipients), recipients
    with factory() as s, s.begin():
        demo_statuses = set(s.scalars(select(Communication.status).where(
            Communication.onboarding_id.in_(demo), Communication.sent_at >= later)))
        suppressed = s.scalar(select(func.count()).select_from(Event).where(
            Event.kind == "message_suppressed"))
    assert demo_statuses == {"suppressed"}
    assert report.suppressed == suppressed == sum(waiting[i] for i in demo if i in waiting)
    assert len(smtp.messages) == report.sent


def test_clear_removes_every_demo_row_and_keeps_real_ones(
        session: Session, playbook: Playbook, demo_and_real: tuple[set[int], int]) -> None:
    demo, real = demo_and_real
    with session.begin():
        real_events = session.scalar(select(func.count()).select_from(Event).where(
            Event.onboarding_id == real))
    with session.begin():
        cleared = clear_demo(session)
    assert cleared.onboardings == len(demo) and cleared.rows["events"] > 0
    with session.begin():
        left = set(session.scalars(select(Onboarding.id)))
        assert left == {real}
        for table in ("communications", "events", "artifacts", "blockers"):
            orphans = session.scalar(text(
                f"SELECT count(*) FROM {table} WHERE onboarding_id IS NOT NULL "
                "AND onboarding_id NOT IN (SELECT id FROM onboardings)"))
            assert orphans == 0, table
        assert session.scalar(select(func.count()).select_from(Event).where(
            Event.onboarding_id == real)) == real_events


def test_a_real_clients_events_still_refuse_delete(
        session: Session, playbook: Playbook, demo_and_real: tuple[set[int], int]) -> None:
    _demo, real = demo_and_real
    with pytest.raises(DBAPIError, match="append-only"), session.begin():
        session.execute(text("DELETE FROM events WHERE onboarding_id = :id"), {"id": real})


def test_the_cli_flags_the_demo_in_status_and_clears_it(sqlite_url: str) -> None:
    def handoff(*args: str) -> str:
        done = subprocess.run([str(Path(sys.executable).with_name("handoff")), *args],
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    handoff("demo", "--onboardings", "6", "--months", "1")  # too small for some memo charts
    rows = json.loads(handoff("status", "--json"))
    assert len(rows) == 6 and all(r["demo"] for r in rows)
    assert handoff("status").count("[demo]") == 6
    card = handoff("status", str(rows[0]["id"]))
    assert "DEMO client" in card
    cleared = handoff("demo", "--clear")
    assert "removed 6 demo onboardings" in cleared and "no runs to cancel" in cleared
    assert "no onboardings yet" in handoff("status")
