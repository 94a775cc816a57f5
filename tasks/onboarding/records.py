"""The service layer: every write to the record of truth goes through here, guardrails included.

Functions take the caller's Session (the caller owns the transaction) and plain values. A refused
action raises a HandoffError subclass whose message explains itself; nothing is written, because
every check runs before the first change and the caller rolls the transaction back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import (
    Artifact,
    Audit,
    Blocker,
    ClientResponse,
    CorrectiveAction,
    Event,
    FounderDecision,
    FounderInterruption,
    Incident,
    Onboarding,
    OwnerAway,
    QaReview,
    SlaException,
    utcnow,
)
from db.playbook import Playbook
from db.validation import (
    MAX_ID,
    GuardrailError,
    HandoffError,
    NotFoundError,
    clean_email,
    clean_emails,
    clean_name,
    clean_text,
    one_of,
)
from tasks.calendar.clock import due_after
from tasks.onboarding.exits import ExitFacts, exit_facts, exit_problems_of, missing_of

TERMS_KEY, SCOPE_KEY = "deal_terms_confirmed", "scope_and_timeline_captured"


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


def _check_after_close(playbook: Playbook, onboarding: Onboarding, at: dt.datetime,
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


# -- creation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewOnboarding:
    """Validated input for one new onboarding (CLI flags or one CSV row)."""

    client_name: str
    segment: str
    offer: str
    owner_email: str
    backup_email: str
    contact_emails: list[str]
    closed_at: dt.datetime
    kickoff_by: dt.date | None = None
    first_milestone: dt.date | None = None
    terms: str | None = None  # deal terms as confirmed at close (records deal_terms_confirmed)
    scope: str | None = None  # scope and timeline (records scope_and_timeline_captured)

    @classmethod
    def parse(cls, *, client: str, segment: str, offer: str, owner: str, backup: str,
              contacts: str | list[str], closed_at: dt.datetime, kickoff_by: dt.date | None,
              first_milestone: dt.date | None, terms: str | None = None,
              scope: str | None = None) -> NewOnboarding:
        """Check every field; the first bad one raises HandoffError naming it."""
        owner_email = clean_email(owner, "owner")
        backup_email = clean_email(backup, "backup")
        if owner_email == backup_email:
            raise HandoffError(f"backup {backup_email!r} is the owner; name a different backup")
        if kickoff_by and kickoff_by < closed_at.date():
            raise HandoffError(
                f"kickoff-by {kickoff_by.isoformat()} is before the close "
                f"{closed_at.date().isoformat()}; expected a later date"
            )
        return cls(
            client_name=clean_name(client, "client"),
            segment=clean_name(segment, "segment"),
            offer=clean_name(offer, "offer"),
            owner_email=owner_email,
            backup_email=backup_email,
            contact_emails=clean_emails(contacts, "contact"),
            closed_at=closed_at,
            kickoff_by=kickoff_by,
            first_milestone=first_milestone,
            terms=clean_text(terms, "--terms"),
            scope=clean_text(scope, "--scope"),
        )


def create_onboarding(session: Session, playbook: Playbook, new: NewOnboarding, *,
                      actor: str) -> Onboarding:
    """Record a closed deal; the client enters close confirmation at the close time."""
    first = playbook.stages[0]
    onboarding = Onboarding(
        client_name=new.client_name,
        segment=new.segment,
        offer=new.offer,
        owner_email=new.owner_email,
        backup_email=new.backup_email,
        contact_emails=",".join(new.contact_emails),
        stage=first.key,
        stage_entered_at=new.closed_at,
        status="active",
        closed_at=new.closed_at,
        kickoff_by=new.kickoff_by,
        first_milestone=new.first_milestone,
        playbook_version=playbook.version,
    )
    session.add(onboarding)
    session.flush()
    _refresh_next_action(session, playbook, onboarding)
    log_event(session, "onboarding_created", actor=actor, onboarding_id=onboarding.id,
              at=new.closed_at, client=new.client_name, stage=first.key)
    # An onboarding cannot exist without an owner and a backup: the assignment is a fact now.
    record_artifact(session, playbook, onboarding.id, "onboarding_owner_assigned", by=actor,
                    at=new.closed_at,
                    note=f"owner {new.owner_email}, backup {new.backup_email}")
    for key, note in ((TERMS_KEY, new.terms), (SCOPE_KEY, new.scope)):
        if note:
            record_artifact(session, playbook, onboarding.id, key, by=actor, at=new.closed_at,
                            note=note)
    return onboarding


# -- what a stage still needs --------------------------------------------------------------


def recorded_keys(session: Session, onboarding_id: int) -> set[str]:
    """Artifact and checklist keys that exist for this onboarding."""
    rows = session.scalars(select(Artifact.key).where(Artifact.onboarding_id == onboarding_id))
    return set(rows)


def missing_items(session: Session, playbook: Playbook, onboarding: Onboarding) -> list[str]:
    """Required items of the current stage that are not recorded yet, in playbook order."""
    return missing_of(playbook, onboarding.stage, recorded_keys(session, onboarding.id))


def open_blockers(session: Session, onboarding_id: int) -> list[Blocker]:
    """Blockers not yet resolved, oldest first."""
    stmt = (select(Blocker).where(Blocker.onboarding_id == onboarding_id,
                                  Blocker.resolved_at.is_(None)).order_by(Blocker.opened_at))
    return list(session.scalars(stmt))


def exit_problems(session: Session, playbook: Playbook, onboarding: Onboarding) -> list[str]:
    """Why the client may not leave its current stage yet; empty when it may (the rule is
    tasks/onboarding/exits.py, which reconcile applies to every client at once)."""
    if onboarding.status != "active":
        return [f"onboarding {onboarding.id} is {onboarding.status}, not active"]
    facts = exit_facts(session, playbook, select(Onboarding.id).where(
        Onboarding.id == onboarding.id), stages=[onboarding.stage])
    return exit_problems_of(playbook, onboarding.stage, facts.get(onboarding.id, ExitFacts()))


def advance(session: Session, playbook: Playbook, onboarding_id: int, *, actor: str,
            at: dt.datetime | None = None, expected_stage: str | None = None) -> Onboarding:
    """Move the client to the next stage, or to ready, if and only if the guardrails allow."""
    onboarding = get_onboarding(session, onboarding_id, for_update=True)
    if expected_stage is not None and onboarding.stage != expected_stage:
        raise GuardrailError(
            f"onboarding {onboarding_id} is in {onboarding.stage}, not {expected_stage}"
        )
    problems = exit_problems(session, playbook, onboarding)
    if problems:
        raise GuardrailError(f"cannot leave {onboarding.stage}: {'; '.join(problems)}")
    at = at or utcnow()
    leaving = onboarding.stage
    following = playbook.next_stage(leaving)
    if following is None:
        onboarding.status = "ready"
        onboarding.ready_at = at
        onboarding.next_action = None
        onboarding.next_action_due = None
        log_event(session, "ready_to_deliver", actor=actor, onboarding_id=onboarding_id, at=at,
                  from_stage=leaving)
    else:
        onboarding.stage = following.key
        onboarding.stage_entered_at = at
        _refresh_next_action(session, playbook, onboarding)
        log_event(session, "stage_transition", actor=actor, onboarding_id=onboarding_id, at=at,
                  from_stage=leaving, to_stage=following.key)
    session.flush()
    return onboarding


def next_action(playbook: Playbook, stage_key: str, have: set[str],
                entered: dt.datetime) -> tuple[str, dt.datetime]:
    """An active client's one next action and its due date, from what the stage still needs."""
    stage = playbook.stage(stage_key)
    pending = [i for i in playbook.required_items(stage.key) if i.key not in have]
    action = (f"{pending[0].label} ({len(pending)} open in {stage.name})" if pending
              else f"Confirm exit checks for {stage.name}")
    return action, due_after(playbook, entered, stage.sla.within, stage.sla.unit)


def _refresh_next_action(session: Session, playbook: Playbook, onboarding: Onboarding) -> None:
    """Keep the seed's 'one next action, one due date' fields in step with the record."""
    if onboarding.status != "active":
        onboarding.next_action, onboarding.next_action_due = None, None
        return
    onboarding.next_action, onboarding.next_action_due = next_action(
        playbook, onboarding.stage, recorded_keys(session, onboarding.id),
        onboarding.stage_entered_at)
    blockers = open_blockers(session, onboarding.id)
    onboarding.blocker_tag = blockers[0].type if blockers else None


# -- facts recorded by the VA --------------------------------------------------------------


def record_artifact(session: Session, playbook: Playbook, onboarding_id: int, key: str, *,
                    by: str, at: dt.datetime, note: str | None = None) -> tuple[Artifact, bool]:
    """Record that an artifact exists; recording it again returns the first record."""
    stage, _item = playbook.item(key)
    note = clean_text(note, "--note")
    by = clean_name(by, "--by")
    onboarding = get_onboarding(session, onboarding_id, for_update=True)
    _check_after_close(playbook, onboarding, at)
    existing = session.scalars(
        select(Artifact).where(Artifact.onboarding_id == onboarding_id, Artifact.key == key)
    ).first()
    if existing is not None:
        return existing, False
    artifact = Artifact(onboarding_id=onboarding_id, key=key, stage=stage.key,
                        recorded_at=at, recorded_by=by, note=note)
    try:
        with session.begin_nested():
            session.add(artifact)
    except IntegrityError:
        # Someone recorded the same item a moment ago: the unique constraint decided; keep theirs.
        first = session.scalars(select(Artifact).where(
            Artifact.onboarding_id == onboarding_id, Artifact.key == key)).one()
        return first, False
    log_event(session, "artifact_recorded", actor=by, onboarding_id=onboarding_id, at=at,
              key=key, stage=stage.key)
    _refresh_next_action(session, playbook, onboarding)
    return artifact, True


def open_blocker(session: Session, playbook: Playbook, onboarding_id: int, blocker_type: str, *,
                 critical: bool, note: str | None, by: str, at: dt.datetime,
                 affects_timeline: bool = False) -> Blocker:
    """Open a blocker of a known type, owned by the lane owner of that type."""
    one_of(blocker_type, playbook.blockers, "--type")
    note = clean_text(note, "--note")
    onboarding = get_onboarding(session, onboarding_id, for_update=True)
    if onboarding.status != "active":
        raise GuardrailError(f"onboarding {onboarding_id} is {onboarding.status}; nothing to block")
    blocker = Blocker(onboarding_id=onboarding_id, type=blocker_type, critical=critical,
                      note=note, owner_email=onboarding.owner_email, opened_at=at, opened_by=by,
                      affects_timeline=affects_timeline)
    session.add(blocker)
    session.flush()
    log_event(session, "blocker_opened", actor=by, onboarding_id=onboarding_id, at=at,
              blocker_id=blocker.id, type=blocker_type, critical=critical)
    _refresh_next_action(session, playbook, onboarding)
    return blocker


def resolve_blocker(session: Session, playbook: Playbook, blocker_id: int, *, by: str,
                    at: dt.datetime, note: str | None = None) -> Blocker:
    """Resolve an open blocker (resolving twice is refused, so the record stays true)."""
    note = clean_text(note, "--note")
    blocker = (session.get(Blocker, blocker_id, with_for_update=True)
               if 1 <= blocker_id <= MAX_ID else None)
    if blocker is None:
        raise NotFoundError(f"blocker {blocker_id} does not exist; 'handoff status ID' lists them")
    if blocker.resolved_at is not None:
        raise GuardrailError(
            f"blocker {blocker_id} was already resolved at {blocker.resolved_at.isoformat()}"
        )
    if at < blocker.opened_at:
        raise HandoffError(f"--at {at.isoformat()} is before the blocker opened")
    blocker.resolved_at = at
    blocker.resolved_by = by
    log_event(session, "blocker_resolved", actor=by, onboarding_id=blocker.onboarding_id, at=at,
              blocker_id=blocker_id, type=blocker.type, note=note)
    session.flush()
    _refresh_next_action(session, playbook,
                         get_onboarding(session, blocker.onboarding_id, for_update=True))
    return blocker


def record_qa(session: Session, onboarding_id: int, *, passed: bool, reason: str | None,
              by: str, at: dt.datetime) -> QaReview:
    """Record a handoff QA check; a failure needs its rework reason."""
    reason = clean_text(reason, "--reason")
    if not passed and not reason:
        raise HandoffError("--reason is required when QA fails (what must be reworked)")
    onboarding = get_onboarding(session, onboarding_id)
    review = QaReview(onboarding_id=onboarding_id, passed=passed, reason=reason,
                      stage=onboarding.stage, by=by, at=at)
    session.add(review)
    session.flush()
    log_event(session, "qa_recorded", actor=by, onboarding_id=onboarding_id, at=at,
              passed=passed, reason=reason)
    return review


def schedule_kickoff(session: Session, playbook: Playbook, onboarding_id: int, *,
                     kickoff_at: dt.datetime, by: str, at: dt.datetime) -> Onboarding:
    """Set or move the kickoff; a move is logged as a reschedule (a red flag when frequent)."""
    onboarding = get_onboarding(session, onboarding_id, for_update=True)
    if kickoff_at < onboarding.closed_at:
        raise HandoffError(f"kickoff {kickoff_at.isoformat()} is before the deal closed")
    previous = onboarding.kickoff_at
    if previous == kickoff_at:
        return onboarding
    onboarding.kickoff_at = kickoff_at
    kind = "kickoff_rescheduled" if previous else "kickoff_scheduled"
    log_event(session, kind, actor=by, onboarding_id=onboarding_id, at=at,
              kickoff_at=kickoff_at.isoformat(),
              previous=previous.isoformat() if previous else None)
    session.flush()
    return onboarding


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


def log_sla_exception(session: Session, playbook: Playbook, onboarding_id: int, *, sla_key: str,
                      reason: str | None, by: str, at: dt.datetime) -> SlaException:
    """Log a justified SLA exception; without a rationale it is refused."""
    one_of(sla_key, list(playbook.slas) + [s.key for s in playbook.stages], "--sla")
    rationale = clean_text(reason, "--reason")
    if not rationale:
        raise GuardrailError("an SLA exception needs a logged rationale: pass --reason TEXT")
    get_onboarding(session, onboarding_id)
    row = SlaException(onboarding_id=onboarding_id, sla_key=sla_key, reason=rationale, by=by,
                       at=at)
    session.add(row)
    session.flush()
    log_event(session, "sla_exception", actor=by, onboarding_id=onboarding_id, at=at,
              reason=rationale, sla=sla_key)
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


def log_client_response(session: Session, onboarding_id: int, *, kind: str,
                        template: str | None, note: str | None, at: dt.datetime,
                        by: str, message_id: str | None = None) -> ClientResponse:
    """A client reply, a follow-up request asking for status, or a clarification request;
    `message_id` is the reply's own, when it was read from the mailbox (recorded once)."""
    one_of(kind, ["response", "followup_request", "clarification"], "kind")
    get_onboarding(session, onboarding_id)
    row = ClientResponse(onboarding_id=onboarding_id, kind=kind, template=template,
                         note=clean_text(note, "--note"), at=at, message_id=message_id)
    session.add(row)
    session.flush()
    log_event(session, f"client_{kind}", actor=by, onboarding_id=onboarding_id, at=at,
              template=template)
    return row


def log_incident(session: Session, onboarding_id: int, *, severity: str, note: str | None,
                 at: dt.datetime, by: str) -> Incident:
    """A delivery incident after handoff."""
    one_of(severity, ["minor", "major", "critical"], "--severity")
    onboarding = get_onboarding(session, onboarding_id)
    if onboarding.status != "ready":
        raise GuardrailError(
            f"onboarding {onboarding_id} has not been handed off yet ({onboarding.stage})"
        )
    row = Incident(onboarding_id=onboarding_id, severity=severity,
                   note=clean_text(note, "--note"), at=at)
    session.add(row)
    session.flush()
    log_event(session, "incident_logged", actor=by, onboarding_id=onboarding_id, at=at,
              severity=severity)
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
