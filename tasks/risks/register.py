"""Writes to the risk register: open (by a trigger or by hand), review, close. Every write is
logged in the event log; the partial unique index keeps one open risk per client and category."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Risk
from db.playbook import Playbook
from db.validation import MAX_ID, GuardrailError, NotFoundError, clean_text, one_of
from tasks.calendar.clock import calendar_for
from tasks.comms.snapshot import Snapshot
from tasks.mail.outbox import owners_away
from tasks.onboarding.records import get_onboarding, log_event
from tasks.risks.facts import load_risk_facts
from tasks.risks.triggers import due_risks


def next_review(playbook: Playbook, at: dt.datetime, every: int) -> dt.datetime:
    """When a risk reviewed (or opened) at `at` is next due for review: `every` business days."""
    calendar = calendar_for(playbook)
    return calendar.add_business_days(calendar.next_open(at), every)


def risk_owner(playbook: Playbook, category: str, away: set[str] | dict[str, dt.date]) -> str:
    """The category's lane owner, or the lane's backup while the owner is away."""
    lane = playbook.lanes[playbook.risks[category].owner_lane]
    return str(lane.backup) if str(lane.owner) in away else str(lane.owner)


def insert_risk(session: Session, playbook: Playbook, *, onboarding_id: int, category: str,
            trigger: str, by: str, at: dt.datetime, owner: str) -> Risk | None:
    """The new open risk, or None when one of this category is already open for the client."""
    kind = playbook.risks[category]
    risk = Risk(onboarding_id=onboarding_id, category=category, trigger=trigger,
                owner_email=owner, mitigation=kind.mitigation,
                review_every_days=kind.review_every, opened_at=at, lane=kind.owner_lane,
                opened_by=by, next_review_at=next_review(playbook, at, kind.review_every))
    try:
        with session.begin_nested():
            session.add(risk)
    except IntegrityError:
        return None  # another sweep or person opened it first
    log_event(session, "risk_opened", actor=by, onboarding_id=onboarding_id, at=at,
              risk_id=risk.id, category=category, owner=owner, trigger=trigger,
              first_action=kind.mitigation, next_review=risk.next_review_at.isoformat()
              if risk.next_review_at else None)
    return risk


def open_due_risks(session: Session, playbook: Playbook, snapshot: Snapshot,
                   as_of: dt.datetime) -> list[int]:
    """Open a risk for every trigger that fired at `as_of` (the escalation sweep's step)."""
    if not playbook.risks:
        return []
    opened = []
    for firing in due_risks(playbook, snapshot, load_risk_facts(session), as_of):
        risk = insert_risk(session, playbook, onboarding_id=firing.onboarding_id,
                       category=firing.category, trigger=firing.detail, by="handoff", at=as_of,
                       owner=risk_owner(playbook, firing.category, snapshot.away))
        if risk is not None:
            opened.append(risk.id)
    return opened


def open_risk(session: Session, playbook: Playbook, onboarding_id: int, *, category: str,
              note: str | None, by: str, at: dt.datetime) -> Risk:
    """Open a risk by hand; refused when one of this category is already open for the client."""
    one_of(category, playbook.risks, "--category")
    text = clean_text(note, "--note", required=True)
    assert text is not None
    get_onboarding(session, onboarding_id)
    existing = session.scalar(select(Risk.id).where(
        Risk.onboarding_id == onboarding_id, Risk.category == category, Risk.closed_at.is_(None)))
    if existing is None:
        lane = playbook.lanes[playbook.risks[category].owner_lane]
        away = owners_away(session, [str(lane.owner)], at, tz=playbook.calendar.tz)
        risk = insert_risk(session, playbook, onboarding_id=onboarding_id, category=category,
                       trigger=text, by=by, at=at, owner=risk_owner(playbook, category, away))
        if risk is not None:
            return risk
        existing = session.scalar(select(Risk.id).where(
            Risk.onboarding_id == onboarding_id, Risk.category == category,
            Risk.closed_at.is_(None)))
    raise GuardrailError(f"onboarding {onboarding_id} already has an open {category} risk "
                         f"(risk {existing}); review or close it instead")


def _open_row(session: Session, risk_id: int, action: str) -> Risk:
    risk = session.get(Risk, risk_id) if 1 <= risk_id <= MAX_ID else None
    if risk is None:
        raise NotFoundError(f"risk {risk_id} does not exist; 'handoff risk list' shows the ids")
    if risk.closed_at is not None:
        raise GuardrailError(f"risk {risk_id} is already closed "
                             f"({risk.closed_at:%Y-%m-%d %H:%M} UTC); cannot {action} it")
    return risk


def review_risk(session: Session, playbook: Playbook, risk_id: int, *, note: str | None,
                by: str, at: dt.datetime) -> Risk:
    """Record a review of an open risk; the next one is due review_every business days on."""
    text = clean_text(note, "--note", required=True)
    risk = _open_row(session, risk_id, "review")
    risk.reviewed_at = at
    risk.next_review_at = next_review(playbook, at, risk.review_every_days)
    log_event(session, "risk_reviewed", actor=by, onboarding_id=risk.onboarding_id, at=at,
              risk_id=risk_id, category=risk.category, note=text,
              next_review=risk.next_review_at.isoformat())
    return risk


def close_risk(session: Session, risk_id: int, *, note: str | None, by: str,
               at: dt.datetime) -> Risk:
    """Close an open risk; the reason is mandatory."""
    text = clean_text(note, "--note", required=True)
    risk = _open_row(session, risk_id, "close")
    risk.closed_at = at
    risk.close_note = text
    risk.next_review_at = None
    log_event(session, "risk_closed", actor=by, onboarding_id=risk.onboarding_id, at=at,
              risk_id=risk_id, category=risk.category, note=text)
    return risk
