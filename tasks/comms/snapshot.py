"""One snapshot of the active portfolio, loaded in a fixed number of set-based queries whatever the
number of clients: what every cadence and escalation rule reads."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from db.models import (
    Artifact,
    Blocker,
    ClientResponse,
    Communication,
    Onboarding,
    OwnerAway,
)
from db.session import collector_paused
from tasks.mail.outbox import away_at


@dataclass
class SentMessage:
    """One outbox row, as much as the rules need."""

    template: str
    key: str
    status: str
    sent_at: dt.datetime | None
    created_at: dt.datetime
    cycle: int


@dataclass
class Client:
    """One active onboarding and everything the rules read about it."""

    row: Onboarding
    artifacts: dict[str, dt.datetime] = field(default_factory=dict)
    messages: list[SentMessage] = field(default_factory=list)
    blockers: list[Blocker] = field(default_factory=list)
    last_response: dt.datetime | None = None

    def sent(self, template: str) -> list[SentMessage]:
        return [m for m in self.messages if m.template == template]


@dataclass
class Snapshot:
    """The active portfolio at one instant, plus who is away."""

    clients: list[Client]
    away: dict[str, dt.date]
    keys: set[str]


def load_snapshot(session: Session, as_of: dt.datetime,
                  onboarding_ids: list[int] | None = None, *,
                  tz: dt.tzinfo) -> Snapshot:
    """Load active onboardings and their facts: six queries, whatever the portfolio size.

    `tz` is the playbook's timezone: an owner away "until" a date is away to its local midnight.
    """
    with collector_paused():  # ~100k rows at 20k active clients; see collector_paused
        return _load_snapshot(session, as_of, onboarding_ids, tz)


def _load_snapshot(session: Session, as_of: dt.datetime, onboarding_ids: list[int] | None,
                   tz: dt.tzinfo) -> Snapshot:
    active = Onboarding.status == "active"
    if onboarding_ids is not None:
        active = and_(active, Onboarding.id.in_(onboarding_ids))
    rows = list(session.scalars(select(Onboarding).where(active).order_by(Onboarding.id)))
    clients = {r.id: Client(row=r) for r in rows}
    for ob_id, key, at in session.execute(
            select(Artifact.onboarding_id, Artifact.key, Artifact.recorded_at)
            .join(Onboarding, Onboarding.id == Artifact.onboarding_id).where(active)):
        clients[ob_id].artifacts[key] = at
    keys: set[str] = set()
    for m in session.execute(
            select(Communication.onboarding_id, Communication.template,
                   Communication.idempotency_key, Communication.status, Communication.sent_at,
                   Communication.created_at, Communication.cycle)
            .join(Onboarding, Onboarding.id == Communication.onboarding_id).where(active)):
        clients[m.onboarding_id].messages.append(SentMessage(
            template=m.template, key=m.idempotency_key, status=m.status, sent_at=m.sent_at,
            created_at=m.created_at, cycle=m.cycle))
        keys.add(m.idempotency_key)
    for blocker in session.scalars(
            select(Blocker).join(Onboarding, Onboarding.id == Blocker.onboarding_id)
            .where(active, Blocker.resolved_at.is_(None)).order_by(Blocker.id)):
        clients[blocker.onboarding_id].blockers.append(blocker)
    for ob_id, at in session.execute(
            select(ClientResponse.onboarding_id, ClientResponse.at)
            .join(Onboarding, Onboarding.id == ClientResponse.onboarding_id)
            .where(active, ClientResponse.kind == "response")):
        current = clients[ob_id].last_response
        clients[ob_id].last_response = at if current is None or at > current else current
    away = {email: until for email, until in session.execute(
        select(OwnerAway.email, OwnerAway.until).where(away_at(as_of, tz)))}
    return Snapshot(clients=list(clients.values()), away=away, keys=keys)
