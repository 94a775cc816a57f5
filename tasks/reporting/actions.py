"""Corrective actions: one per threshold broken per ISO week, listed until closed with a note."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import CorrectiveAction
from db.playbook import Playbook
from tasks.calendar.clock import calendar_for
from tasks.onboarding import records
from tasks.reporting.kpis.triggers import Breach

ACTION_DUE_BUSINESS_DAYS = 5


def iso_week(playbook: Playbook, at: dt.datetime) -> str:
    """'2026-W45' of the business timezone."""
    return at.astimezone(playbook.calendar.tz).strftime("%G-W%V")


def record_actions(session: Session, playbook: Playbook, breaches: list[Breach],
                   as_of: dt.datetime) -> list[int]:
    """One corrective action per breached threshold per ISO week; returns ids created now."""
    week = iso_week(playbook, as_of)
    calendar = calendar_for(playbook)
    due = calendar.add_business_days(calendar.next_open(as_of), ACTION_DUE_BUSINESS_DAYS)
    created = []
    for breach in breaches:
        lane = playbook.lanes[breach.owner_lane]
        action_id = records.open_action(
            session, source_key=f"{breach.key}:{week}", title=breach.title,
            owner=str(lane.owner), lane=breach.owner_lane,
            due=due.astimezone(playbook.calendar.tz).date(), at=as_of)
        if action_id is not None:
            created.append(action_id)
    return created


def open_actions(session: Session, playbook: Playbook, as_of: dt.datetime) -> pd.DataFrame:
    """Corrective actions still open, by owner, oldest first, with overdue flagged."""
    rows = session.execute(select(
        CorrectiveAction.id, CorrectiveAction.title, CorrectiveAction.owner_email,
        CorrectiveAction.lane, CorrectiveAction.due, CorrectiveAction.created_at,
    ).where(CorrectiveAction.closed_at.is_(None), CorrectiveAction.created_at <= as_of)
        .order_by(CorrectiveAction.owner_email, CorrectiveAction.created_at)).all()
    today = as_of.astimezone(playbook.calendar.tz).date()
    return pd.DataFrame([{"id": r.id, "owner": r.owner_email, "lane": r.lane, "title": r.title,
                          "due": r.due.isoformat(), "overdue": r.due < today} for r in rows],
                        columns=["id", "owner", "lane", "title", "due", "overdue"])
