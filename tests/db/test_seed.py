"""The seeded generator: the same history on every database, and ids the app can continue."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Base, Blocker, Event, Onboarding, UTCDateTime
from db.playbook import Playbook
from db.session import get_engine, session_factory, upgrade
from tasks.history.generator import generate_history
from tasks.onboarding import records

END = dt.datetime(2026, 11, 2, 13, 0, tzinfo=dt.UTC)


def _history(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every seeded table as comparable rows, ids made relative to the first onboarding's."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with get_engine(url).connect() as conn:
        first = conn.scalar(select(func.min(Onboarding.id)))
        blocker = conn.scalar(select(func.min(Blocker.id))) or 0
        for table in Base.metadata.sorted_tables:
            rows = []
            for row in conn.execute(select(table)).mappings():
                values = dict(row)
                if table.name != "onboardings":
                    values.pop("id", None)
                for key in ("id", "onboarding_id"):
                    if key in values and values[key] is not None:
                        values[key] -= first
                if table.name == "events" and "blocker_id" in values["detail"]:
                    values["detail"] = values["detail"] | {
                        "blocker_id": values["detail"]["blocker_id"] - blocker}
                rows.append(tuple(sorted((k, repr(v)) for k, v in values.items())))
            out[table.name] = sorted(rows)
            # comparisons in SQL see the same instants (the stored text format sorts right)
            cutoff = END - dt.timedelta(days=20)
            out[f"{table.name} before cutoff"] = [
                (column.name, conn.scalar(select(func.count()).where(column <= cutoff)))
                for column in table.columns if isinstance(column.type, UTCDateTime)]
    return out


@pytest.mark.postgres
def test_sqlite_fast_path_writes_what_the_orm_types_would(
        sqlite_url: str, pg_server_url: str, playbook: Playbook) -> None:
    """SQLite gets pre-formatted values, PostgreSQL goes through Core: same history back."""
    from tests.conftest import _truncate

    _truncate(pg_server_url)
    for url in (sqlite_url, pg_server_url):
        with session_factory(url)() as session, session.begin():
            generate_history(session, playbook, n=60, months=3, end=END, seed=11)
    lite, pg = _history(sqlite_url), _history(pg_server_url)
    assert sum(len(rows) for rows in lite.values()) > 2000
    assert lite == pg


def test_seeding_continues_ids_and_the_app_can_write_after_it(session: Session,
                                                              playbook: Playbook) -> None:
    with session.begin():
        generate_history(session, playbook, n=20, months=2, end=END, seed=3)
    with session.begin():
        new = records.NewOnboarding.parse(
            client="After Seed", segment="smb", offer="Growth", owner="va@northwind.example",
            backup="va2@northwind.example", contacts=["pat@after.example"],
            closed_at=END, kickoff_by=None, first_milestone=None)
        created = records.create_onboarding(session, playbook, new, actor="test").id
    with session.begin():
        report = generate_history(session, playbook, n=15, months=2, end=END, seed=4)
    with session.begin():
        ids = session.scalars(select(Onboarding.id).order_by(Onboarding.id)).all()
        assert len(ids) == len(set(ids)) == 36 and report.onboardings == 15
        assert created == 21 and ids[-1] == 36
        # each client's log reads in time order by id, as the service layer writes it (the
        # rough patch's extra follow-ups and incidents are drawn across all clients at the
        # end, so they are appended after: an import, not a replay)
        log = session.execute(select(Event.onboarding_id, Event.id, Event.at)
                              .where(Event.onboarding_id.is_not(None),
                                     Event.kind.not_in(("client_followup_request",
                                                        "incident_logged")))
                              .order_by(Event.onboarding_id, Event.id)).all()
        assert len(log) > 500
        for (a_ob, _a_id, a_at), (b_ob, _b_id, b_at) in zip(log, log[1:], strict=False):
            assert a_ob != b_ob or a_at <= b_at


def test_forked_workers_write_the_same_history(home: Path, playbook: Playbook,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks have their own random streams, so two workers write what one process does."""
    import tasks.history.generator

    monkeypatch.setattr(tasks.history.generator, "CHUNK", 25)
    histories = []
    for processes in (1, 2):
        url = f"sqlite:///{home / f'seed-{processes}.db'}"
        upgrade(url)
        with session_factory(url)() as session, session.begin():
            report = generate_history(session, playbook, n=80, months=3, end=END, seed=5,
                                      processes=processes)
        assert report.onboardings == 80
        histories.append(_history(url))
    assert sum(len(rows) for rows in histories[0].values()) > 2000
    assert histories[0] == histories[1]
