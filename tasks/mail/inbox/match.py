"""Which onboarding an inbound message belongs to, in a fixed order of certainty.

1. thread: its In-Reply-To/References name a Message-ID the outbox sent to a client (for a
   bounce: the Message-ID of the returned message);
2. reply_to: it was sent to the signed plus-address one onboarding's client mail carries;
3. contact: its sender is a contact of exactly one active onboarding. Only probable: it is
   recorded and shown to the owner, never acted on.

Mail from the team itself (owners, backups, lanes, founder, the sender address) is never a
client reply, whatever it threads to.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Communication, Onboarding
from db.playbook import Playbook
from db.settings import Settings
from tasks.mail.inbox.address import onboarding_addressed
from tasks.mail.inbox.classify import Inbound

MatchedBy = Literal["thread", "reply_to", "contact"]


@dataclass(frozen=True)
class Match:
    """An onboarding, the outbox row the message answers (if known) and how it was found."""

    onboarding_id: int
    communication_id: int | None
    template: str | None
    matched_by: MatchedBy

    @property
    def probable(self) -> bool:
        return self.matched_by == "contact"


def team_addresses(playbook: Playbook) -> set[str]:
    """Everyone on the business side, as the playbook names them."""
    business = playbook.business
    people = [business.founder.email, business.delivery_team.email, business.sender.email]
    people += [p for lane in playbook.lanes.values() for p in (lane.owner, lane.backup)]
    return {str(p).lower() for p in people}


def match_message(session: Session, playbook: Playbook, settings: Settings,
                  inbound: Inbound) -> Match | None:
    """The onboarding this message belongs to, or None (a stranger, or the team itself)."""
    if inbound.bounce is not None:
        original = inbound.bounce.original_message_id
        return _by_message_ids(session, [original] if original else [], client_only=False)
    if inbound.sender in team_addresses(playbook):
        return None
    found = (_by_message_ids(session, list(inbound.threads), client_only=True)
             or _by_reply_to(session, settings, inbound)
             or _by_contact(session, inbound))
    if found is None:
        return None
    onboarding = session.get(Onboarding, found.onboarding_id)
    if onboarding is None or inbound.sender in {onboarding.owner_email.lower(),
                                                onboarding.backup_email.lower()}:
        return None
    return found


def _by_message_ids(session: Session, ids: list[str], *, client_only: bool) -> Match | None:
    if not ids:
        return None
    query = select(Communication).where(Communication.message_id.in_(ids),
                                        Communication.onboarding_id.is_not(None))
    if client_only:
        query = query.where(Communication.audience == "client")
    rows = {row.message_id: row for row in session.scalars(query)}
    for mid in ids:  # In-Reply-To first, then the most recent reference
        row = rows.get(mid)
        if row is not None and row.onboarding_id is not None:
            return Match(row.onboarding_id, row.id, row.template, "thread")
    return None


def _by_reply_to(session: Session, settings: Settings, inbound: Inbound) -> Match | None:
    if not settings.reply_to or settings.secret_key is None:
        return None
    onboarding_id = onboarding_addressed(settings.reply_to, settings.secret_key.get_secret_value(),
                                         inbound.addressed_to)
    if onboarding_id is None or session.get(Onboarding, onboarding_id) is None:
        return None
    last = session.scalars(
        select(Communication).where(Communication.onboarding_id == onboarding_id,
                                    Communication.audience == "client",
                                    Communication.sent_at.is_not(None))
        .order_by(Communication.sent_at.desc(), Communication.id.desc()).limit(1)).first()
    return Match(onboarding_id, last.id if last else None, last.template if last else None,
                 "reply_to")


def _by_contact(session: Session, inbound: Inbound) -> Match | None:
    """The one active onboarding listing the sender as a contact, begun before the message."""
    if not inbound.sender:
        return None
    candidates = session.scalars(
        select(Onboarding).where(Onboarding.status == "active",
                                 func.lower(Onboarding.contact_emails).contains(inbound.sender,
                                                                         autoescape=True)))
    sent = inbound.date or dt.datetime.max.replace(tzinfo=dt.UTC)
    owners = [ob for ob in candidates
              if inbound.sender in {c.lower() for c in ob.contacts} and ob.created_at <= sent]
    if len(owners) != 1:
        return None
    return Match(owners[0].id, None, None, "contact")
