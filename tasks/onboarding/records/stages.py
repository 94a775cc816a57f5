"""What a stage still needs, the guardrails on leaving it, and the one next action it shows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

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
from tasks.calendar.clock import clock_start, due_after
from tasks.onboarding.exits import (
    ExitFacts,
    exit_facts,
    exit_problems_of,
    held_items,
    missing_of,
)
from tasks.onboarding.records.core import get_onboarding, log_event


def recorded_keys(session: Session, onboarding_id: int) -> set[str]:
    """Artifact and checklist keys that exist for this onboarding."""
    rows = session.scalars(select(Artifact.key).where(Artifact.onboarding_id == onboarding_id))
    return set(rows)


def recorded_times(session: Session, onboarding_id: int) -> dict[str, dt.datetime]:
    """When each artifact and checklist item of this onboarding was recorded."""
    return {key: at for key, at in session.execute(
        select(Artifact.key, Artifact.recorded_at).where(
            Artifact.onboarding_id == onboarding_id))}


def missing_items(session: Session, playbook: Playbook, onboarding: Onboarding) -> list[str]:
    """Required items of the current stage that are not recorded yet, in playbook order."""
    return missing_of(playbook, onboarding.stage, recorded_keys(session, onboarding.id),
                      onboarding.stage_items)


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
    return exit_problems_of(playbook, onboarding.stage, facts.get(onboarding.id, ExitFacts()),
                            onboarding.stage_items)


def enter_stage(playbook: Playbook, onboarding: Onboarding, stage_key: str,
                at: dt.datetime) -> list[str]:
    """Put the client in a stage, holding it to what the stage requires now (`held_items`);
    returns those item keys, for the event that records the entry."""
    onboarding.stage = stage_key
    onboarding.stage_entered_at = at
    onboarding.stage_items = [i.key for i in playbook.required_items(stage_key)]
    onboarding.stage_playbook_version = playbook.version
    return onboarding.stage_items


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
        required = enter_stage(playbook, onboarding, following.key, at)
        refresh_next_action(session, playbook, onboarding)
        log_event(session, "stage_transition", actor=actor, onboarding_id=onboarding_id, at=at,
                  from_stage=leaving, to_stage=following.key, required=required,
                  playbook_version=playbook.version)
    session.flush()
    return onboarding


def next_action(playbook: Playbook, stage_key: str, have: set[str], entered: dt.datetime,
                closed: dt.datetime, entered_with: Collection[str] | None = None
                ) -> tuple[str, dt.datetime]:
    """An active client's one next action and its due date, from what the stage still needs;
    the due counts from the stage SLA's `from` (the stage's entry or the close)."""
    stage = playbook.stage(stage_key)
    start = clock_start(stage.sla.from_, closed_at=closed, stage=stage_key, entered_at=entered,
                        artifacts={}) or entered
    pending = [i for i in held_items(playbook, stage.key, entered_with) if i.key not in have]
    action = (f"{pending[0].label} ({len(pending)} open in {stage.name})" if pending
              else f"Confirm exit checks for {stage.name}")
    return action, due_after(playbook, start, stage.sla.within, stage.sla.unit)


def refresh_next_action(session: Session, playbook: Playbook, onboarding: Onboarding) -> None:
    """Keep the blueprint's 'one next action, one due date' fields in step with the record."""
    if onboarding.status != "active":
        onboarding.next_action, onboarding.next_action_due = None, None
        return
    onboarding.next_action, onboarding.next_action_due = next_action(
        playbook, onboarding.stage, recorded_keys(session, onboarding.id),
        onboarding.stage_entered_at, onboarding.closed_at, onboarding.stage_items)
    blockers = open_blockers(session, onboarding.id)
    onboarding.blocker_tag = blockers[0].type if blockers else None


def apply_playbook(session: Session, playbook: Playbook, *, actor: str, at: dt.datetime,
                   now: bool = False) -> tuple[int, dict[int, list[str]]]:
    """After a playbook edit: every active client's next action and due date recomputed under
    the playbook in force (SLA and calendar changes move them). With `now`, each client's
    current stage also holds it to everything the stage requires today, not only what it
    required on entry. Returns the number of active clients, and the clients so changed with
    the items added to what they need (each change an event)."""
    clients = session.scalars(select(Onboarding).where(Onboarding.status == "active")
                              .order_by(Onboarding.id).with_for_update())
    changed: dict[int, list[str]] = {}
    active = 0
    for onboarding in clients:
        active += 1
        before, version = onboarding.stage_items, onboarding.stage_playbook_version
        required = [i.key for i in playbook.required_items(onboarding.stage)]
        if now and (before != required or version != playbook.version):
            added = [k for k in required if before is not None and k not in before]
            onboarding.stage_items = required
            onboarding.stage_playbook_version = playbook.version
            changed[onboarding.id] = added
            log_event(session, "stage_requirements_applied", actor=actor,
                      onboarding_id=onboarding.id, at=at, stage=onboarding.stage, added=added,
                      required=required, from_version=version, playbook_version=playbook.version)
        refresh_next_action(session, playbook, onboarding)
    log_event(session, "playbook_applied", actor=actor, at=at, playbook_version=playbook.version,
              apply_now=now, clients_changed=len(changed))
    session.flush()
    return active, changed
