"""What people read from the risk register: the list, one client's open risks, the reviews due by
owner (weekly review) and the counts by category (monthly memo)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import Integer, and_, func, or_, select
from sqlalchemy.orm import Session

from db.models import Onboarding, Risk
from db.playbook import Playbook


def _label(playbook: Playbook, category: str) -> str:
    """A category's label; a category since removed from the playbook keeps its key."""
    kind = playbook.risks.get(category)
    return kind.label if kind else category


def risk_rows(session: Session, playbook: Playbook, *, open_only: bool = False,
              onboarding_id: int | None = None) -> list[dict[str, Any]]:
    """Register entries, open first then newest, with the client's name."""
    query = (select(Risk, Onboarding.client_name)
             .outerjoin(Onboarding, Onboarding.id == Risk.onboarding_id)
             .order_by(Risk.closed_at.is_not(None), Risk.opened_at.desc(), Risk.id.desc()))
    if open_only:
        query = query.where(Risk.closed_at.is_(None))
    if onboarding_id is not None:
        query = query.where(Risk.onboarding_id == onboarding_id)
    return [{"id": r.id, "onboarding": r.onboarding_id, "client": client,
             "category": r.category, "label": _label(playbook, r.category),
             "owner": r.owner_email, "lane": r.lane, "trigger": r.trigger,
             "mitigation": r.mitigation, "review_every_days": r.review_every_days,
             "opened_at": r.opened_at, "opened_by": r.opened_by, "reviewed_at": r.reviewed_at,
             "next_review_at": r.next_review_at, "closed_at": r.closed_at,
             "close_note": r.close_note, "open": r.closed_at is None}
            for r, client in session.execute(query)]


def reviews_due(session: Session, playbook: Playbook, until: dt.datetime) -> list[dict[str, Any]]:
    """Open risks whose review falls due before `until` (overdue ones too), grouped by owner."""
    rows = session.execute(
        select(Risk.id, Risk.category, Risk.owner_email, Risk.next_review_at, Risk.mitigation,
               Onboarding.client_name, Risk.onboarding_id)
        .outerjoin(Onboarding, Onboarding.id == Risk.onboarding_id)
        .where(Risk.closed_at.is_(None), Risk.next_review_at < until)
        .order_by(Risk.owner_email, Risk.next_review_at, Risk.id)).all()
    tz = playbook.calendar.tz
    by_owner: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_owner[r.owner_email].append({
            "id": r.id, "client": r.client_name or "-", "onboarding": r.onboarding_id,
            "category": r.category, "label": _label(playbook, r.category),
            "due": r.next_review_at.astimezone(tz).strftime("%a %d %b"),
            "mitigation": r.mitigation})
    return [{"owner": owner, "risks": risks} for owner, risks in by_owner.items()]


def risk_counts(session: Session, playbook: Playbook, start: dt.datetime,
                end: dt.datetime) -> list[dict[str, Any]]:
    """Per category (the playbook's order, then any other): opened and closed in [start, end),
    and open at `end`."""
    opened = func.sum(and_(Risk.opened_at >= start, Risk.opened_at < end).cast(Integer()))
    closed = func.sum(and_(Risk.closed_at >= start, Risk.closed_at < end).cast(Integer()))
    still = func.sum(and_(Risk.opened_at < end, or_(Risk.closed_at.is_(None),
                                                    Risk.closed_at >= end)).cast(Integer()))
    counts = {category: (int(o or 0), int(c or 0), int(s or 0)) for category, o, c, s in
              session.execute(select(Risk.category, opened, closed, still)
                              .group_by(Risk.category))}
    order = [*playbook.risks, *sorted(set(counts) - set(playbook.risks))]
    return [{"category": k, "label": _label(playbook, k), "opened": counts.get(k, (0, 0, 0))[0],
             "closed": counts.get(k, (0, 0, 0))[1], "open": counts.get(k, (0, 0, 0))[2]}
            for k in order]
