"""The demo: a seeded history loaded into a database so a new user sees a populated UI and a real
memo, flagged as demo so nothing ever mails its fictional clients, and removable in one go.

Every row the demo writes either belongs to a demo onboarding (found through the foreign keys to
onboardings, so tables added later are covered) or carries the seed's marker (interruptions
without a client, corrective actions from past reviews).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import CursorResult, Delete, Table, delete, func, select, update
from sqlalchemy.orm import Session

from db.models import Base, CorrectiveAction, FounderInterruption, Onboarding
from db.playbook import Playbook
from tasks.history.generator import SeedReport, generate_history
from tasks.history.rows import SEED_NOTE


@dataclass(frozen=True)
class Cleared:
    """What `handoff demo --clear` removed."""

    onboardings: int
    run_ids: list[str]  # the demo clients' Prefect runs, to cancel
    rows: dict[str, int]


def load_demo(session: Session, playbook: Playbook, *, n: int, months: int, end: dt.datetime,
              seed: int) -> SeedReport:
    """Write the seeded history and flag every onboarding it wrote as demo."""
    first = int(session.scalar(select(func.coalesce(func.max(Onboarding.id), 0))) or 0) + 1
    report = generate_history(session, playbook, n=n, months=months, end=end, seed=seed)
    session.execute(update(Onboarding).where(Onboarding.id >= first).values(demo=True)
                    .execution_options(synchronize_session=False))
    return report


def _tables_of_onboardings() -> list[Table]:
    """Tables holding a client's rows, children before parents (foreign keys to onboardings)."""
    onboardings = Onboarding.__table__
    return [table for table in reversed(Base.metadata.sorted_tables)
            if any(fk.column.table is onboardings for fk in table.foreign_keys)]


def _delete(session: Session, statement: Delete) -> int:
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return int(result.rowcount)


def clear_demo(session: Session) -> Cleared:
    """Remove every demo onboarding and everything recorded about it; real clients stay."""
    demo = select(Onboarding.id).where(Onboarding.demo).scalar_subquery()
    run_ids = [r for r in session.scalars(select(Onboarding.flow_run_id)
                                          .where(Onboarding.demo)) if r]
    rows: dict[str, int] = {}
    for table in _tables_of_onboardings():
        column = next(fk.parent for fk in table.foreign_keys
                      if fk.column.table is Onboarding.__table__)
        rows[table.name] = _delete(session, delete(table).where(column.in_(demo)))
    rows["founder_interruptions"] = rows.get("founder_interruptions", 0) + _delete(
        session, delete(FounderInterruption).where(FounderInterruption.note == SEED_NOTE))
    rows["corrective_actions"] = _delete(session, delete(CorrectiveAction).where(
        CorrectiveAction.source_key.like("history:%")))
    gone = _delete(session, delete(Onboarding).where(Onboarding.demo))
    return Cleared(onboardings=gone, run_ids=run_ids,
                   rows={name: count for name, count in rows.items() if count})
