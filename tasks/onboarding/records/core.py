"""The record itself: the append-only event log, reading one onboarding, and the checks every
dated fact passes (not in the future, not long before the client's close)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import (
    Event,
    Onboarding,
    utcnow,
)
from db.playbook import Playbook
from db.validation import (
    MAX_ID,
    HandoffError,
    NotFoundError,
)


def log_event(session: Session, kind: str, *, actor: str, onboarding_id: int | None = None,
              at: dt.datetime | None = None, reason: str | None = None,
              **detail: Any) -> Event:
    """Append one fact to the event log (the log is never updated or deleted)."""
    event = Event(onboarding_id=onboarding_id, at=at or utcnow(), actor=actor, kind=kind,
                  detail=detail, reason=reason)
    session.add(event)
    return event


def check_happened(playbook: Playbook, at: dt.datetime, field: str = "--at", *,
                   now: dt.datetime | None = None) -> dt.datetime:
    """A time something happened: not in the future (beyond the playbook's clock skew)."""
    now = now or utcnow()
    ahead = dt.timedelta(minutes=playbook.input_limits.future_minutes)
    if at > now + ahead:
        raise HandoffError(f"{field} {at.isoformat(timespec='minutes')} is in the future; "
                           f"record what has happened (now is {now:%Y-%m-%d %H:%M} UTC)")
    return at


def check_close(playbook: Playbook, closed_at: dt.datetime, field: str = "--closed-at", *,
                now: dt.datetime | None = None) -> dt.datetime:
    """A deal's close: happened, and not longer ago than the playbook allows."""
    now = now or utcnow()
    check_happened(playbook, closed_at, field, now=now)
    oldest = now - dt.timedelta(days=playbook.input_limits.close_age_days)
    if closed_at < oldest:
        raise HandoffError(f"{field} {closed_at.date().isoformat()} is more than "
                           f"{playbook.input_limits.close_age_days} days ago; expected a recent "
                           "close (input_limits.close_age_days in the playbook)")
    return closed_at


def check_after_close(playbook: Playbook, onboarding: Onboarding, at: dt.datetime,
                       field: str = "--at") -> None:
    """A fact about a client dates from around its close at the earliest."""
    days = playbook.input_limits.before_close_days
    if at < onboarding.closed_at - dt.timedelta(days=days):
        raise HandoffError(f"{field} {at.date().isoformat()} is more than {days} days before "
                           f"{onboarding.client_name}'s deal closed "
                           f"({onboarding.closed_at.date().isoformat()}); check the date")


def get_onboarding(session: Session, onboarding_id: int, *, for_update: bool = False) -> Onboarding:
    """The onboarding with this id, or NotFoundError."""
    if not 1 <= onboarding_id <= MAX_ID:  # beyond the column: a SQL overflow, not "not found"
        raise NotFoundError(f"onboarding {onboarding_id} does not exist (ids run from 1 to "
                            f"{MAX_ID})")
    stmt = select(Onboarding).where(Onboarding.id == onboarding_id)
    if for_update:
        # Lock the row and re-read it, so a concurrent writer's change is seen, not overwritten.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    onboarding = session.scalars(stmt).one_or_none()
    if onboarding is None:
        raise NotFoundError(
            f"onboarding {onboarding_id} does not exist; 'handoff status' lists the ids"
        )
    return onboarding
