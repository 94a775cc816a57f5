"""A won deal becomes an onboarding: mapped to the same NewOnboarding as the CSV import and the
CLI, recorded once per (source, external deal id), whoever delivers it and however often."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import DealLink, utcnow
from db.playbook import Playbook
from db.validation import HandoffError, parse_date, parse_instant
from tasks.deals.events import WonDeal
from tasks.onboarding.records import NewOnboarding, create_onboarding, log_event


@dataclass(frozen=True)
class Recorded:
    """The onboarding a deal maps to, and whether this call created it."""

    onboarding_id: int
    created: bool


def linked_onboarding(session: Session, source: str, external_id: str) -> int | None:
    """The onboarding already started by this deal, if any."""
    return session.scalars(select(DealLink.onboarding_id).where(
        DealLink.source == source, DealLink.external_id == external_id)).first()


def _instant(value: str | None, playbook: Playbook) -> dt.datetime:
    """A close time as providers write it: ISO 8601, or unix seconds / milliseconds."""
    if value is None:
        return utcnow()
    if value.isdigit():
        number = int(value)
        seconds = number / 1000 if number > 10**11 else number
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    return parse_instant(value, playbook.calendar.tz, "closed_at", default_now=False)


def to_new_onboarding(deal: WonDeal, playbook: Playbook) -> NewOnboarding:
    """The deal as a NewOnboarding, through the same validation as the CLI and the CSV import.

    Owner and backup: named on the deal (generic), else the playbook's CRM owner table, else the
    deal lane's owner and backup. Terms and scope confirm the close only if the playbook says so.
    """
    rules, fields = playbook.deals, deal.fields
    lane = playbook.lanes[rules.lane]
    owner, backup = str(lane.owner), str(lane.backup)
    for row in rules.owners:
        if row.source == deal.source and row.crm_owner == deal.crm_owner:
            owner, backup = str(row.owner), str(row.backup)
    owner, backup = fields.get("owner", owner), fields.get("backup", backup)
    trusted = rules.terms_from_deal
    try:
        return NewOnboarding.parse(
            client=deal.client or "", segment=fields.get("segment", rules.segment),
            offer=fields.get("offer", rules.offer), owner=owner, backup=backup,
            contacts=list(deal.contacts), closed_at=_instant(deal.closed_at, playbook),
            kickoff_by=parse_date(fields.get("kickoff_by"), "kickoff_by"),
            first_milestone=parse_date(fields.get("first_milestone"), "first_milestone"),
            terms=fields.get("terms") if trusted else None,
            scope=fields.get("scope") if trusted else None,
            client_tz=fields.get("client_tz"))
    except HandoffError as exc:
        raise HandoffError(f"{deal.source} deal {deal.external_id}: {exc}") from None


def record_won_deal(session: Session, playbook: Playbook, deal: WonDeal, new: NewOnboarding, *,
                    via: str) -> Recorded:
    """Create the onboarding for this deal, or return the one it already has.

    The unique (source, external_id) constraint decides between concurrent deliveries: the loser's
    savepoint (its onboarding included) rolls back and it answers with the winner's id.
    """
    existing = linked_onboarding(session, deal.source, deal.external_id)
    if existing is not None:
        return Recorded(existing, created=False)
    actor = f"{deal.source}-{via}"
    try:
        with session.begin_nested():
            onboarding = create_onboarding(session, playbook, new, actor=actor)
            session.add(DealLink(source=deal.source, external_id=deal.external_id,
                                 onboarding_id=onboarding.id, received_at=utcnow(), via=via))
            session.flush()
    except IntegrityError:
        winner = linked_onboarding(session, deal.source, deal.external_id)
        if winner is None:
            raise
        return Recorded(winner, created=False)
    # What the deal said about terms and scope, for the VA who confirms them.
    unconfirmed = ({} if playbook.deals.terms_from_deal else
                   {k: v for k, v in deal.fields.items() if k in ("terms", "scope")})
    log_event(session, "deal_won", actor=actor, onboarding_id=onboarding.id, source=deal.source,
              external_id=deal.external_id, via=via, unconfirmed=unconfirmed)
    return Recorded(onboarding.id, created=True)
