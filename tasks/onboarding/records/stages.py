"""What a stage still needs, the guardrails on leaving it, and the one next action it shows."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import (
    Artifact,
    Blocker,
    Onboarding,
    utcnow,
)
from db.playbook import Playbook
from db.validation import (
    GuardrailError,
)
from tasks.calendar.clock import due_after
from tasks.onboarding.exits import ExitFacts, exit_facts, exit_problems_of, missing_of
from tasks.onboarding.records.core import get_onboarding, log_event


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
        refresh_next_action(session, playbook, onboarding)
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


def refresh_next_action(session: Session, playbook: Playbook, onboarding: Onboarding) -> None:
    """Keep the blueprint's 'one next action, one due date' fields in step with the record."""
    if onboarding.status != "active":
        onboarding.next_action, onboarding.next_action_due = None, None
        return
    onboarding.next_action, onboarding.next_action_due = next_action(
        playbook, onboarding.stage, recorded_keys(session, onboarding.id),
        onboarding.stage_entered_at)
    blockers = open_blockers(session, onboarding.id)
    onboarding.blocker_tag = blockers[0].type if blockers else None
