"""The outbox: every message is queued under an idempotency key and delivered at most once.

Delivery claims a batch (status queued -> sending, committed) before handing anything to SMTP and
records each result right after. A crash between "SMTP accepted" and "recorded as sent" leaves the
row in `sending`; the next delivery marks such rows `uncertain` and tells the owner, rather than
sending them a second time. So does a message the server took with no reply after it.

What each SMTP outcome does to a row (the transport decides the outcome, `tasks.mailer`):
sent -> sent; transient -> queued again after a backoff (client mail: inside business hours),
failed after MAX_ATTEMPTS; permanent -> failed, owner told; uncertain -> uncertain, owner told,
never re-sent; held (the server refuses us: login, sender, TLS) -> queued again with its attempt
given back, and the transport alarm raised (`tasks.mail.alarm`), which does not go by mail.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Communication, Event, Onboarding, OwnerAway, utcnow
from db.playbook import Playbook
from db.settings import Settings
from tasks.calendar.clock import business_minutes_late, next_send_window
from tasks.comms import keys
from tasks.comms.alerts import (
    OnDemand,
    alert_drafts,
    is_alert,
    post_transport_alarm,
    send_alert,
)
from tasks.mail.alarm import TransportAlarm, announce, clear_alarm, raise_alarm
from tasks.mail.inbox.address import reply_address
from tasks.mail.render import Rendered, catalog, render_message
from tasks.mail.transport import (
    Attachment,
    FileTransport,
    OutgoingMessage,
    SendOutcome,
    SmtpConfig,
    SmtpTransport,
    Transport,
)
from tasks.onboarding.records import log_event

MAX_ATTEMPTS = 6
BACKOFF_MINUTES = (5, 15, 45, 120, 360)
SENDING_LEASE = dt.timedelta(minutes=10)  # a claimed row older than this was orphaned by a crash


def transport_for(settings: Settings) -> Transport:
    """SMTP when a host is configured, else .eml files under var/outbox/."""
    if not settings.smtp_host:
        return FileTransport(settings.outbox_dir)
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return SmtpTransport(SmtpConfig(
        host=settings.smtp_host, port=settings.smtp_port, username=settings.smtp_username,
        password=password, starttls=settings.smtp_starttls, ssl=settings.smtp_ssl,
        verify_tls=settings.smtp_verify_tls, timeout=settings.smtp_timeout,
        connect_timeout=settings.smtp_connect_timeout, sender=_sender_address(settings),
    ))


def _sender_address(settings: Settings) -> str:
    from db.playbook import get_playbook

    return str(get_playbook().business.sender.email)


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
    send_from = now if draft.due_at is None else min(now, draft.due_at)
    if spec.audience == "client":
        send_from = next_send_window(playbook, max(send_from, now))  # clients: business hours
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
    values = []
    for draft in drafts:
        spec = specs[draft.template]
        send_from = now if draft.due_at is None else min(now, draft.due_at)
        if spec.audience == "client":
            send_from = next_send_window(playbook, max(send_from, now))
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


def _outgoing(row: Communication, sender: str, settings: Settings) -> OutgoingMessage:
    reply_to = None
    if row.audience == "client" and row.onboarding_id and settings.reply_to and settings.secret_key:
        # Replies name their onboarding even when the client's mail program drops threading.
        reply_to = reply_address(settings.reply_to, settings.secret_key.get_secret_value(),
                                 row.onboarding_id)
    return OutgoingMessage(
        reply_to=reply_to,
        key=row.idempotency_key, sender=sender, to=tuple(row.recipients.split(",")),
        subject=row.subject, html=row.body_html, text=row.body_text,
        attachments=tuple(Attachment(filename=a["filename"], mimetype=a["mimetype"],
                                     inline_cid=a.get("inline_cid"),
                                     content=base64.b64decode(a["content"]))
                          for a in row.attachments),
    )


@dataclass
class DeliveryReport:
    """What one delivery pass did."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    uncertain: int = 0
    held: int = 0
    suppressed: int = 0


def deliver(factory: sessionmaker[Session], playbook: Playbook, settings: Settings, *,
            now: dt.datetime, onboarding_id: int | None = None,
            limit: int = 5000) -> DeliveryReport:
    """Send every due queued message over one connection; record each result at once."""
    report = DeliveryReport()
    with factory.begin() as session:
        report.uncertain = _mark_orphans(session, playbook, now)
        report.suppressed = _suppress_demo(session, playbook, now, onboarding_id)
        claimed = _claim(session, now, onboarding_id, limit)
    if not claimed:
        return report
    sender = str(playbook.business.sender.email)
    fault: tuple[str, str] | None = None
    mail_sent = 0
    with OnDemand(lambda: transport_for(settings)) as transport:
        for row in claimed:
            result = (send_alert(settings, key=row.idempotency_key, recipients=row.recipients,
                                 title=row.subject, body=row.body_text)
                      if is_alert(row.recipients) else
                      transport.send(_outgoing(row, sender, settings)))
            with factory.begin() as session:
                _record(session, playbook, row.id, result.outcome, result.message_id,
                        result.error, now, report)
            if result.fault is not None and fault is None:
                fault = (result.fault.value, result.error or result.fault.value)
            mail_sent += result.outcome is SendOutcome.SENT and not is_alert(row.recipients)
    _update_alarm(factory, playbook, settings, fault, flowing=mail_sent > 0, now=now)
    return report


def _update_alarm(factory: sessionmaker[Session], playbook: Playbook, settings: Settings,
                  fault: tuple[str, str] | None, *, flowing: bool, now: dt.datetime) -> None:
    """Raise the transport alarm for a fault (once per outage), clear it when mail flowed; then
    say so outside mail (log, Prefect event, hooks) and in the team's chat channels."""
    if fault is None and not flowing:
        return
    raised: TransportAlarm | None = None
    cleared: TransportAlarm | None = None
    with factory.begin() as session:
        if fault is not None:
            raised = raise_alarm(session, *fault, now=now)
        else:
            cleared = clear_alarm(session, now=now)
    if raised is not None:
        announce(raised)
        post_transport_alarm(settings, playbook, raised)
    elif cleared is not None:
        announce(cleared, cleared_at=now)
        post_transport_alarm(settings, playbook, cleared, cleared_at=now)


def _due(now: dt.datetime, onboarding_id: int | None) -> ColumnElement[bool]:
    """Queued rows whose time has come (of one client, or of everyone)."""
    due = and_(Communication.status == "queued",
               or_(Communication.next_attempt_at.is_(None), Communication.next_attempt_at <= now))
    return due if onboarding_id is None else and_(due, Communication.onboarding_id == onboarding_id)


def _suppress_demo(session: Session, playbook: Playbook, now: dt.datetime,
                   onboarding_id: int | None) -> int:
    """A demo client is fictional: its due mail is recorded as suppressed at the moment it
    would have gone out (so clocks and KPIs read as if sent), and never reaches SMTP."""
    rows = list(session.scalars(select(Communication).where(
        _due(now, onboarding_id),
        Communication.onboarding_id.in_(select(Onboarding.id).where(Onboarding.demo)))))
    for row in rows:
        row.status, row.sent_at = "suppressed", now
        row.late_business_minutes = (business_minutes_late(playbook, row.due_at, now)
                                     if row.due_at else None)
        log_event(session, "message_suppressed", actor="handoff", onboarding_id=row.onboarding_id,
                  at=now, template=row.template, key=row.idempotency_key)
    return len(rows)


def _claim(session: Session, now: dt.datetime, onboarding_id: int | None,
           limit: int) -> list[Communication]:
    """Move due rows from queued to sending; only rows this transaction moved are ours."""
    stmt = (select(Communication.id).where(_due(now, onboarding_id))
            .order_by(Communication.id).limit(limit))
    if session.bind is not None and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    ids = list(session.scalars(stmt))
    if not ids:
        return []
    token = uuid.uuid4().hex
    session.execute(
        update(Communication).where(Communication.id.in_(ids), Communication.status == "queued")
        .values(status="sending", attempts=Communication.attempts + 1, claimed_by=token,
                claimed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    rows = list(session.scalars(select(Communication).where(
        Communication.id.in_(ids), Communication.claimed_by == token,
        Communication.status == "sending")))
    for row in rows:
        session.expunge(row)
    return rows


def _record(session: Session, playbook: Playbook, row_id: int, outcome: SendOutcome,
            message_id: str, error: str | None, now: dt.datetime,
            report: DeliveryReport) -> None:
    row = session.get(Communication, row_id)
    assert row is not None
    if outcome is SendOutcome.SENT:
        row.status, row.sent_at, row.message_id, row.last_error = "sent", now, message_id, None
        row.late_business_minutes = (business_minutes_late(playbook, row.due_at, now)
                                     if row.due_at else None)
        report.sent += 1
        log_event(session, "message_sent", actor="handoff", onboarding_id=row.onboarding_id,
                  at=now, template=row.template, key=row.idempotency_key,
                  late_business_minutes=row.late_business_minutes)
        return
    row.last_error = error
    if outcome is SendOutcome.HELD:
        # Nothing reached the server: give the attempt back; it goes when the server takes us.
        row.status, row.attempts = "queued", row.attempts - 1
        report.held += 1
        return
    if outcome is SendOutcome.UNCERTAIN:
        _mark_uncertain(session, playbook, row, now,
                        problem=error or "no reply after the message was handed over")
        report.uncertain += 1
        return
    if outcome is SendOutcome.TRANSIENT and row.attempts < MAX_ATTEMPTS:
        wait = BACKOFF_MINUTES[min(row.attempts - 1, len(BACKOFF_MINUTES) - 1)]
        retry_at = now + dt.timedelta(minutes=wait)
        if row.audience == "client":
            retry_at = next_send_window(playbook, retry_at)  # clients: business hours only
        row.status, row.next_attempt_at = "queued", retry_at
        report.retried += 1
        log_event(session, "message_retry", actor="handoff", onboarding_id=row.onboarding_id,
                  at=now, template=row.template, attempts=row.attempts, error=error)
        return
    row.status = "failed"
    report.failed += 1
    log_event(session, "message_failed", actor="handoff", onboarding_id=row.onboarding_id,
              at=now, template=row.template, attempts=row.attempts, error=error)
    notify_delivery_problem(session, playbook, row, now, problem=error or "refused",
                  reason="refused" if outcome is SendOutcome.PERMANENT else "unreachable")


def _mark_orphans(session: Session, playbook: Playbook, now: dt.datetime) -> int:
    """Rows left in `sending` by a crash may have reached SMTP: never resend, tell a human."""
    orphans = list(session.scalars(select(Communication).where(
        Communication.status == "sending", Communication.claimed_at < utcnow() - SENDING_LEASE)))
    for row in orphans:
        _mark_uncertain(session, playbook, row, now,
                        problem="the sending process stopped before recording the reply")
    return len(orphans)


def _mark_uncertain(session: Session, playbook: Playbook, row: Communication,
                    now: dt.datetime, *, problem: str) -> None:
    """The message may have been delivered: never resend it, tell the owner what to check."""
    row.status = "uncertain"
    log_event(session, "message_uncertain", actor="handoff", onboarding_id=row.onboarding_id,
              at=now, template=row.template, key=row.idempotency_key)
    notify_delivery_problem(session, playbook, row, now, reason="uncertain", problem=problem)


def notify_delivery_problem(session: Session, playbook: Playbook, row: Communication,
                            now: dt.datetime, *, problem: str, reason: str,
                            extra: dict[str, Any] | None = None) -> None:
    """Tell the owner (their backup while they are away) that a message did not get through.

    `reason` is refused (a 5xx), unreachable (transient failures until MAX_ATTEMPTS),
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
            "founder": business.founder.name, "founder_email": str(business.founder.email)}
