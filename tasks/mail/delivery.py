"""The delivery pass: every due message handed over at most once, each result recorded at once.

Delivery claims a batch (status queued -> sending, committed) before handing anything to SMTP and
records each result right after. A crash between "SMTP accepted" and "recorded as sent" leaves the
row in `sending`; the next delivery marks such rows `uncertain` and tells the owner, rather than
sending them a second time. So does a message the server took with no reply after it.

Chat alerts go first, one post each; then the mail, over one connection (`Transport.send_all`),
which a pipelining server gets one round-trip a message: message N's content and final dot
travel with N+1's envelope (`tasks.mail.smtp`). Recording does not lag behind that: the transport
yields N's result when the reply to N's dot is read, and writes N+1's content only when asked
for the next result, i.e. after N's row is committed. So a crash leaves at most one message whose
fate is unrecorded (in `sending`: later `uncertain`, never re-sent). N+1's envelope alone may
already be on the wire; an envelope delivers nothing, and if the connection dies there N+1 is
transient (retried), N uncertain. Letting the record lag one message (N+1's content out before
N's commit) would never resend either, both rows staying `sending`, and would take the commit off
the round-trip; but a crash in that window would make a known result uncertain and tell the owner
for nothing, and a commit costs milliseconds where a round-trip costs tens: it does not lag. What
a message costs besides: the claimed row is written back without being read again, and the next
message's MIME is built while the reply to this one is on its way (`tasks.mail.smtp`).

What each SMTP outcome does to a row (the transport decides the outcome, `tasks.mail.smtp`):
sent -> sent; transient -> queued again after a backoff (client mail: inside its send window),
failed after MAX_ATTEMPTS; permanent -> failed, owner told; uncertain -> uncertain, owner told,
never re-sent; held (the server refuses us: login, sender, TLS) -> queued again with its attempt
given back, and the transport alarm raised (`tasks.mail.alarm`), which does not go by mail.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import Communication, Onboarding, utcnow
from db.playbook import Playbook
from db.settings import Settings
from tasks.calendar.clock import business_minutes_late, next_send_window
from tasks.comms.alerts import OnDemand, is_alert, post_transport_alarm, send_alert
from tasks.mail.alarm import TransportAlarm, announce, clear_alarm, raise_alarm
from tasks.mail.inbox.address import reply_address
from tasks.mail.message import Attachment, OutgoingMessage
from tasks.mail.outbox import client_zones, notify_delivery_problem
from tasks.mail.outcomes import SendOutcome, SendResult
from tasks.mail.smtp import SmtpConfig, SmtpTransport
from tasks.mail.transport import FileTransport, Transport
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
    deferred: int = 0  # client mail whose send window closed before a pass reached it


def deliver(factory: sessionmaker[Session], playbook: Playbook, settings: Settings, *,
            now: dt.datetime, onboarding_id: int | None = None,
            limit: int = 5000) -> DeliveryReport:
    """Send every due queued message over one connection; record each result at once."""
    report = DeliveryReport()
    with factory.begin() as session:
        report.uncertain = _mark_orphans(session, playbook, now)
        report.suppressed = _suppress_demo(session, playbook, now, onboarding_id)
        report.deferred = _defer_closed(session, playbook, now, onboarding_id)
        claimed = _claim(session, now, onboarding_id, limit)
    if not claimed:
        return report
    sender = str(playbook.business.sender.email)
    mail = [row for row in claimed if not is_alert(row.recipients)]
    pending = {row.idempotency_key: row for row in mail}
    recorded = _Recorder(factory, playbook, now, report)
    for row in claimed:
        if is_alert(row.recipients):
            recorded(row, send_alert(settings, key=row.idempotency_key,
                                     recipients=row.recipients, title=row.subject,
                                     body=row.body_text))
    mail_sent = 0
    with OnDemand(lambda: transport_for(settings)) as transport:
        # One result at a time, recorded before the transport is asked for the next (and so
        # before it hands over the next message's content): see the module docstring.
        for result in transport.send_all(_outgoing(row, sender, settings) for row in mail):
            recorded(pending.pop(result.key), result)
            mail_sent += result.outcome is SendOutcome.SENT
    _update_alarm(factory, playbook, settings, recorded.fault, flowing=mail_sent > 0, now=now)
    return report


class _Recorder:
    """Records each result in its own transaction, and the first transport fault of the pass."""

    def __init__(self, factory: sessionmaker[Session], playbook: Playbook, now: dt.datetime,
                 report: DeliveryReport) -> None:
        self.factory, self.playbook, self.now, self.report = factory, playbook, now, report
        self.fault: tuple[str, str] | None = None

    def __call__(self, row: Communication, result: SendResult) -> None:
        with self.factory.begin() as session:
            _record(session, self.playbook, row, result.outcome, result.message_id,
                    result.error, self.now, self.report)
        if result.fault is not None and self.fault is None:
            self.fault = (result.fault.value, result.error or result.fault.value)


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


def _defer_closed(session: Session, playbook: Playbook, now: dt.datetime,
                  onboarding_id: int | None) -> int:
    """Client mail is handed over only inside its send window: a due row whose window has
    closed (a pass that ran late, a retry at the close) waits for the next one."""
    rows = session.execute(
        select(Communication.id, Onboarding.client_tz)
        .join(Onboarding, Onboarding.id == Communication.onboarding_id, isouter=True)
        .where(_due(now, onboarding_id), Communication.audience == "client")).all()
    by_zone: dict[str | None, list[int]] = {}
    for row_id, zone in rows:
        by_zone.setdefault(zone, []).append(row_id)
    deferred = 0
    for zone, ids in by_zone.items():
        opens = next_send_window(playbook, now, zone)
        if opens > now:
            session.execute(update(Communication).where(Communication.id.in_(ids))
                            .values(next_attempt_at=opens)
                            .execution_options(synchronize_session=False))
            deferred += len(ids)
    return deferred


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
        Communication.status == "sending").order_by(Communication.id)))  # queued order
    for row in rows:
        session.expunge(row)
    return rows


def _record(session: Session, playbook: Playbook, row: Communication, outcome: SendOutcome,
            message_id: str, error: str | None, now: dt.datetime,
            report: DeliveryReport) -> None:
    """Write one result to its claimed row (loaded by `_claim`, and only ours to change since:
    no second SELECT)."""
    session.add(row)
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
        if row.audience == "client":  # clients: inside their send window only
            retry_at = next_send_window(playbook, retry_at,
                                        client_zones(session, [row.onboarding_id]).get(
                                            row.onboarding_id or 0))
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
