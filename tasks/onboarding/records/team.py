"""What the founder and the review loop record: interruptions, founder decisions, owners away,
corrective actions and 30-day audits."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import (
    Audit,
    CorrectiveAction,
    FounderDecision,
    FounderInterruption,
    OwnerAway,
)
from db.playbook import Playbook
from db.validation import (
    MAX_ID,
    GuardrailError,
    HandoffError,
    NotFoundError,
    clean_email,
    clean_text,
    one_of,
)
from tasks.onboarding.records.core import get_onboarding, log_event


def log_interruption(session: Session, playbook: Playbook, *, category: str, avoidable: bool,
                     onboarding_id: int | None, lane: str | None, note: str | None,
                     at: dt.datetime, by: str) -> FounderInterruption:
    """Count one founder interruption, by category, avoidable or required."""
    one_of(category, playbook.interruption_categories, "--category")
    if lane is not None:
        one_of(lane, playbook.lanes, "--lane")
    if onboarding_id is not None:
        get_onboarding(session, onboarding_id)
    row = FounderInterruption(onboarding_id=onboarding_id, category=category, avoidable=avoidable,
                              lane=lane, at=at, note=clean_text(note, "--note"))
    session.add(row)
    session.flush()
    log_event(session, "founder_interrupted", actor=by, onboarding_id=onboarding_id, at=at,
              category=category, avoidable=avoidable, lane=lane)
    return row


def record_founder_decision(session: Session, playbook: Playbook, *, boundary: str,
                            decision: str | None, decided_by: str,
                            onboarding_id: int | None, at: dt.datetime) -> FounderDecision:
    """Record a decision reserved to the founder; anyone else is refused."""
    one_of(boundary, playbook.founder_boundaries, "--boundary")
    text = clean_text(decision, "--decision", required=True)
    decider = clean_email(decided_by, "--by")
    founder = playbook.business.founder.email
    if decider != founder.lower() and decider != founder:
        raise GuardrailError(
            f"{boundary} is a founder decision; {decider} cannot decide it (founder: {founder})"
        )
    if onboarding_id is not None:
        get_onboarding(session, onboarding_id)
    assert text is not None
    row = FounderDecision(onboarding_id=onboarding_id, boundary=boundary, decision=text,
                          decided_by=decider, at=at)
    session.add(row)
    session.flush()
    log_event(session, "founder_decision", actor=decider, onboarding_id=onboarding_id, at=at,
              boundary=boundary, decision=text)
    return row


def set_owner_away(session: Session, email: str, *, until: dt.date, at: dt.datetime,
                   by: str, tz: dt.tzinfo) -> OwnerAway:
    """Mark an owner out of office; their backup owner takes over until the date (local)."""
    address = clean_email(email, "EMAIL")
    if until < at.astimezone(tz).date():
        raise HandoffError(f"--until {until.isoformat()} is in the past")
    row = OwnerAway(email=address, since=at, until=until)
    session.add(row)
    session.flush()
    log_event(session, "owner_away", actor=by, at=at, email=address, until=until.isoformat())
    return row


def close_action(session: Session, action_id: int, *, note: str | None, by: str,
                 at: dt.datetime) -> CorrectiveAction:
    """Close a corrective action with a note saying what was done."""
    text = clean_text(note, "--note", required=True)
    action = session.get(CorrectiveAction, action_id) if 1 <= action_id <= MAX_ID else None
    if action is None:
        raise NotFoundError(f"corrective action {action_id} does not exist")
    if action.closed_at is not None:
        raise GuardrailError(f"corrective action {action_id} is already closed")
    action.closed_at = at
    action.close_note = text
    log_event(session, "action_closed", actor=by, at=at, action_id=action_id, note=text)
    return action


def open_action(session: Session, *, source_key: str, title: str, owner: str, lane: str,
                due: dt.date, at: dt.datetime) -> int | None:
    """A corrective action for a finding; None if one with this key exists (it is the arbiter:
    a threshold breached twice in a week, or two reviews at once, make one action)."""
    if session.scalar(select(CorrectiveAction.id).where(CorrectiveAction.source_key == source_key)):
        return None
    action = CorrectiveAction(source_key=source_key, title=title, owner_email=owner, lane=lane,
                              due=due, created_at=at)
    try:
        with session.begin_nested():
            session.add(action)
    except IntegrityError:
        return None  # another review recorded it first
    log_event(session, "action_created", actor="handoff", at=at, action_id=action.id,
              source_key=source_key, title=title, owner=owner)
    return action.id


def record_audit(session: Session, *, onboarding_id: int, at: dt.datetime,
                 first_milestone_met: bool | None, incidents: int, churn_risk: bool,
                 notes: str) -> bool:
    """The client's 30-day audit; False if it was audited already (one audit per client)."""
    audit = Audit(onboarding_id=onboarding_id, at=at, first_milestone_met=first_milestone_met,
                  incidents=incidents, churn_risk=churn_risk, notes=notes)
    try:
        with session.begin_nested():
            session.add(audit)
    except IntegrityError:
        return False
    return True
