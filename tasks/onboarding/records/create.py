"""A closed deal becomes an onboarding: its input validated field by field, then recorded."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from db.models import (
    Onboarding,
)
from db.playbook import Playbook
from db.validation import (
    HandoffError,
    clean_email,
    clean_emails,
    clean_name,
    clean_text,
    parse_timezone,
)
from tasks.onboarding.records.core import log_event
from tasks.onboarding.records.facts import record_artifact
from tasks.onboarding.records.stages import enter_stage, refresh_next_action

TERMS_KEY, SCOPE_KEY = "deal_terms_confirmed", "scope_and_timeline_captured"

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
    client_tz: str | None = None  # the client's IANA timezone; None: the business's

    @classmethod
    def parse(cls, *, client: str, segment: str, offer: str, owner: str, backup: str,
              contacts: str | list[str], closed_at: dt.datetime, kickoff_by: dt.date | None,
              first_milestone: dt.date | None, terms: str | None = None,
              scope: str | None = None, client_tz: str | None = None) -> NewOnboarding:
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
            client_tz=parse_timezone(client_tz, "client-tz"),
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
        status="active",
        closed_at=new.closed_at,
        kickoff_by=new.kickoff_by,
        first_milestone=new.first_milestone,
        playbook_version=playbook.version,
        client_tz=new.client_tz,
    )
    required = enter_stage(playbook, onboarding, first.key, new.closed_at)
    session.add(onboarding)
    session.flush()
    refresh_next_action(session, playbook, onboarding)
    log_event(session, "onboarding_created", actor=actor, onboarding_id=onboarding.id,
              at=new.closed_at, client=new.client_name, stage=first.key, required=required,
              playbook_version=playbook.version)
    # An onboarding cannot exist without an owner and a backup: the assignment is a fact now.
    record_artifact(session, playbook, onboarding.id, "onboarding_owner_assigned", by=actor,
                    at=new.closed_at,
                    note=f"owner {new.owner_email}, backup {new.backup_email}")
    for key, note in ((TERMS_KEY, new.terms), (SCOPE_KEY, new.scope)):
        if note:
            record_artifact(session, playbook, onboarding.id, key, by=actor, at=new.closed_at,
                            note=note)
    return onboarding
