"""Facts about one client, recorded by the VA (or the flow, the portal, the inbox): artifacts,
blockers, QA checks, the kickoff, client replies, incidents and SLA exceptions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import (
    Artifact,
    Blocker,
    ClientResponse,
    Incident,
    Onboarding,
    QaReview,
    SlaException,
)
from db.playbook import Playbook
from db.validation import (
    MAX_ID,
    GuardrailError,
    HandoffError,
    NotFoundError,
    clean_name,
    clean_text,
    one_of,
)
from tasks.onboarding.records.core import check_after_close, get_onboarding, log_event
from tasks.onboarding.records.stages import refresh_next_action


def record_artifact(session: Session, playbook: Playbook, onboarding_id: int, key: str, *,
                    by: str, at: dt.datetime, note: str | None = None) -> tuple[Artifact, bool]:
    """Record that an artifact exists; recording it again returns the first record."""
    stage, _item = playbook.item(key)
    note = clean_text(note, "--note")
    by = clean_name(by, "--by")
    onboarding = get_onboarding(session, onboarding_id, for_update=True)
    check_after_close(playbook, onboarding, at)
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
    refresh_next_action(session, playbook, onboarding)
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
    refresh_next_action(session, playbook, onboarding)
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
    refresh_next_action(session, playbook,
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
