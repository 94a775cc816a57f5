"""Test data built through the service layer, never by poking rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from db.models import Base
from db.playbook import Playbook
from db.session import get_engine
from tasks.onboarding import records

CLOSED = dt.datetime(2026, 11, 23, 15, 0, tzinfo=dt.UTC)  # Monday 10:00 New York


def new_onboarding(session: Session, playbook: Playbook, **overrides: Any) -> int:
    """Create one onboarding in its own transaction and return its id."""
    fields: dict[str, Any] = dict(
        client="Acme Dental", segment="smb", offer="Growth retainer",
        owner="va@northwind.example", backup="va2@northwind.example",
        contacts=["pat@acme.example"], closed_at=CLOSED, kickoff_by=dt.date(2026, 12, 4),
        first_milestone=dt.date(2026, 12, 18),
    )
    fields.update(overrides)
    with session.begin():
        ob = records.create_onboarding(session, playbook, records.NewOnboarding.parse(**fields),
                                       actor="test")
        return ob.id


def add_items(session: Session, playbook: Playbook, onboarding_id: int, keys: list[str],
              at: dt.datetime = CLOSED) -> None:
    """Record these artifacts in one transaction."""
    with session.begin():
        for key in keys:
            records.record_artifact(session, playbook, onboarding_id, key, by="test", at=at)


def stage_items(playbook: Playbook, stage: str) -> list[str]:
    """Every required key of one stage."""
    return [i.key for i in playbook.required_items(stage)]


def snapshot(session: Session) -> dict[str, int]:
    """Row counts of every table, to prove a refused action changed nothing."""
    with session.begin():
        return {t.name: int(session.scalar(select(func.count()).select_from(t)) or 0)
                for t in Base.metadata.sorted_tables}


@contextmanager
def statements_sent(url: str) -> Iterator[list[str]]:
    """Every SQL statement sent to the database at `url` inside the block."""
    sent: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        sent.append(statement)

    engine = get_engine(url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)
