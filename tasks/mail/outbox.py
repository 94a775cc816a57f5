"""The outbox: every message is queued under an idempotency key, once, whoever queues it.

The unique key is the arbiter: a second enqueue of the same key (a re-run, a concurrent pass)
returns the row already there. Client mail is queued for the business's send window; team
notices get one chat copy per channel of their lane. Delivery is `tasks.mail.delivery`.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Communication, Event, Onboarding, OwnerAway
from db.playbook import Playbook
from tasks.calendar.clock import next_send_window
from tasks.comms import keys
from tasks.comms.alerts import alert_drafts, is_alert
from tasks.mail.message import Attachment
from tasks.mail.render import Rendered, catalog, render_message
from tasks.onboarding.records import log_event


def away_at(at: dt.datetime, tz: dt.tzinfo) -> ColumnElement[bool]:
    """Owner-away rows in force at `at`: `until` is a date in the business timezone `tz`, so
    "away until Friday" covers Friday until local midnight."""
    return and_(OwnerAway.since <= at, OwnerAway.until >= at.astimezone(tz).date())


def owners_away(session: Session, emails: list[str], at: dt.datetime, *,
                tz: dt.tzinfo) -> set[str]:
    """Which of these people are away at `at` (one query)."""
    if not emails:
        return set()
    return set(session.scalars(select(OwnerAway.email).where(OwnerAway.email.in_(emails),
                                                             away_at(at, tz))))


@dataclass(frozen=True)
class Draft:
    """A message to queue: what, to whom, under which key, and when it was due."""

    onboarding_id: int | None
    template: str
    recipients: list[str]
    key: str
    context: dict[str, Any]
    due_at: dt.datetime | None = None
    sla_key: str | None = None
    cycle: int = 0
    attachments: tuple[Attachment, ...] = ()


def enqueue(session: Session, playbook: Playbook, draft: Draft, *,
            now: dt.datetime) -> tuple[Communication, bool]:
    """Queue a message unless its key was queued before; returns (row, created)."""
    existing = session.scalars(
        select(Communication).where(Communication.idempotency_key == draft.key)).first()
    if existing is not None:
        return existing, False
    draft = with_portal_links(session, playbook, [draft])[0]
    spec = catalog()[draft.template]
    rendered = render_message(draft.template, draft.context)
    send_from = _send_from(playbook, draft, spec.audience, now,
                           client_zones(session, [draft.onboarding_id]))
    row = _row(draft, rendered, spec.audience, spec.lane, created=now, send_from=send_from)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        # Another transaction queued the same key first: the unique constraint is the arbiter.
        winner = session.scalars(
            select(Communication).where(Communication.idempotency_key == draft.key)).one()
        return winner, False
    log_event(session, "message_queued", actor="handoff", onboarding_id=draft.onboarding_id,
              at=now, template=draft.template, key=draft.key)
    for copy in alert_drafts(playbook, [draft]):  # team notices also go to chat
        enqueue(session, playbook, copy, now=now)
    return row, True


def enqueue_many(session: Session, playbook: Playbook, drafts: list[Draft], *,
                 now: dt.datetime) -> list[str]:
    """Queue a batch in a constant number of statements; returns the keys queued now (keys
    already queued, or repeated within the batch, are skipped)."""
    if not drafts:
        return []
    drafts = [*drafts, *alert_drafts(playbook, drafts)]  # team notices also go to chat
    specs = catalog()
    drafts = with_portal_links(session, playbook, drafts)
    zones = client_zones(session, [d.onboarding_id for d in drafts
                                   if specs[d.template].audience == "client"])
    values = []
    for draft in drafts:
        spec = specs[draft.template]
        send_from = _send_from(playbook, draft, spec.audience, now, zones)
        values.append(_values(draft, render_message(draft.template, draft.context),
                              spec.audience, spec.lane, created=now, send_from=send_from))
    try:
        with session.begin_nested():
            # Core executemany: ORM objects would need their ids back, which SQLite can only
            # return one INSERT per row.
            session.execute(insert(Communication), values)
    except IntegrityError:
        # A concurrent pass queued some of these keys first: fall back to one-by-one.
        return [row.idempotency_key for draft in drafts for row, created in
                [enqueue(session, playbook, draft, now=now)]
                if created and not is_alert(draft.recipients)]
    session.execute(insert(Event), [
        {"onboarding_id": d.onboarding_id, "at": now, "actor": "handoff",
         "kind": "message_queued", "detail": {"template": d.template, "key": d.key},
         "reason": None} for d in drafts])
    return [d.key for d in drafts if not is_alert(d.recipients)]


def client_zones(session: Session, onboarding_ids: list[int | None]) -> dict[int, str | None]:
    """Each onboarding's client timezone (None: the business's), in one query."""
    ids = sorted({i for i in onboarding_ids if i is not None})
    if not ids:
        return {}
    return {i: tz for i, tz in session.execute(
        select(Onboarding.id, Onboarding.client_tz).where(Onboarding.id.in_(ids)))}


def _send_from(playbook: Playbook, draft: Draft, audience: str, now: dt.datetime,
               zones: dict[int, str | None]) -> dt.datetime:
    """When a message may first go out: team notices at once; client mail in the next window
    both the business's and the client's calendars allow (tasks.calendar.clock)."""
    if audience != "client":
        return now if draft.due_at is None else min(now, draft.due_at)
    zone = zones.get(draft.onboarding_id) if draft.onboarding_id is not None else None
    return next_send_window(playbook, now, zone)


def with_portal_links(session: Session, playbook: Playbook, drafts: list[Draft]) -> list[Draft]:
    """Client messages carry the client's portal link (`portal_url`, None when it is revoked
    or expired): one lookup for the whole batch."""
    from tasks.portal.links import link_urls

    specs = catalog()
    ids = sorted({d.onboarding_id for d in drafts
                  if d.onboarding_id is not None and specs[d.template].audience == "client"})
    if not ids:
        return drafts
    urls = link_urls(session, playbook, ids)
    return [replace(d, context={**d.context, "portal_url": urls.get(d.onboarding_id)})
            if d.onboarding_id in urls else d for d in drafts]


def _row(draft: Draft, rendered: Rendered, audience: str, lane: str, *, created: dt.datetime,
         send_from: dt.datetime) -> Communication:
    return Communication(**_values(draft, rendered, audience, lane, created=created,
                                   send_from=send_from))


def _values(draft: Draft, rendered: Rendered, audience: str, lane: str, *,
            created: dt.datetime, send_from: dt.datetime) -> dict[str, Any]:
    return dict(
        onboarding_id=draft.onboarding_id, template=draft.template, lane=lane,
        # A chat copy of a team notice is kept apart from mail in every count.
        audience="alert" if is_alert(draft.recipients) else audience,
        recipients=",".join(draft.recipients), subject=rendered.subject,
        body_html=rendered.html, body_text=rendered.text,
        attachments=[{"filename": a.filename, "mimetype": a.mimetype,
                      "inline_cid": a.inline_cid,
                      "content": base64.b64encode(a.content).decode()}
                     for a in draft.attachments],
        idempotency_key=draft.key, status="queued", attempts=0, next_attempt_at=send_from,
        created_at=created, due_at=draft.due_at, sla_key=draft.sla_key, cycle=draft.cycle,
        message_id=None, sent_at=None, claimed_by=None, claimed_at=None, last_error=None,
        late_business_minutes=None,
    )


def notify_delivery_problem(session: Session, playbook: Playbook, row: Communication,
                            now: dt.datetime, *, problem: str, reason: str,
                            extra: dict[str, Any] | None = None) -> None:
    """Tell the owner (their backup while they are away) that a message did not get through.

    `reason` is refused (a 5xx), unreachable (transient failures until the last attempt),
    uncertain (a crash mid-send) or bounced (a delivery-status notification came back, `extra`
    names the bad address); the notice says what to do in each case.
    """
    if row.template == "delivery_failure":
        return  # a failed failure-notice is in the log and in `handoff status`; no loop
    onboarding = session.get(Onboarding, row.onboarding_id) if row.onboarding_id else None
    notify_owner(session, playbook, onboarding, now, template="delivery_failure",
                 key=keys.delivery_failure(row.idempotency_key), context={
                     "failed": {"template": row.template, "recipients": row.recipients,
                                "attempts": row.attempts, "error": problem, "reason": reason,
                                "client": onboarding.client_name if onboarding else None,
                                **(extra or {})}})


def notify_owner(session: Session, playbook: Playbook, onboarding: Onboarding | None,
                 now: dt.datetime, *, template: str, key: str,
                 context: dict[str, Any]) -> tuple[Communication, bool]:
    """Queue one notice to the onboarding's owner — their backup while they are away, the
    founder when there is no onboarding — under `key`, so it is sent once."""
    owner = onboarding.owner_email if onboarding else str(playbook.business.founder.email)
    if onboarding and owners_away(session, [owner], now, tz=playbook.calendar.tz):
        owner = onboarding.backup_email
        log_event(session, "handover_to_backup", actor="handoff", onboarding_id=onboarding.id,
                  at=now, key=key, to=owner)
    return enqueue(session, playbook, Draft(
        onboarding_id=onboarding.id if onboarding else None, template=template,
        recipients=[owner], key=key,
        context={"business": business_context(playbook), **context}), now=now)


def business_context(playbook: Playbook) -> dict[str, str]:
    """The business fields every template may use."""
    business = playbook.business
    return {"name": business.name, "sender": business.sender.name,
            "founder": business.founder.name, "founder_email": str(business.founder.email),
            "delivery_team": business.delivery_team.name}
