"""What a matched inbound message changes, recorded once per Message-ID.

* bounce: the returned outbox row becomes `bounced` with the server's diagnostic, and its
  owner (the backup while they are away) gets one notice naming the bad address;
* auto_reply: recorded and logged; nothing else changes, the cadence goes on;
* reply, matched for certain: a client response (which stops the no-response clock and pauses
  the reminders), and one notice to the owner with the reply's first lines;
* reply, matched only by its sender: recorded as probable and shown to the owner, nothing else.

A reply never records an artifact: what it delivers, a person reads and records.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Communication, InboundMessage, Onboarding
from db.playbook import Playbook
from tasks.comms import keys
from tasks.comms.cadences import reply_pause_end
from tasks.comms.context import local_time
from tasks.mail.inbox.classify import Inbound
from tasks.mail.inbox.match import Match
from tasks.mail.outbox import notify_delivery_problem, notify_owner
from tasks.onboarding.records import log_client_response, log_event

Outcome = Literal["bounce", "auto_reply", "reply", "probable_reply", "duplicate"]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
ACTOR = "inbox"


@dataclass(frozen=True)
class Handled:
    """What was done with one message, as the CLI and the flow report it."""

    uid: int
    message_id: str
    sender: str
    subject: str
    outcome: Outcome | Literal["ignored"]
    onboarding_id: int | None
    matched_by: str | None
    detail: str

    def line(self) -> str:
        """One line for the run log and `handoff inbox check`."""
        who = f"onboarding {self.onboarding_id} ({self.matched_by})" if self.onboarding_id \
            else "no onboarding"
        return f"uid {self.uid} from {self.sender or '?'}: {self.outcome}, {who}: {self.detail}"


def plain(value: str, limit: int) -> str:
    """Text from a stranger's message made safe to store and show: no control characters."""
    return _CONTROL.sub(" ", value)[:limit]


def message_time(inbound: Inbound, now: dt.datetime) -> dt.datetime:
    """When the message was written: its Date, but never later than when it was read."""
    return min(inbound.date, now) if inbound.date else now


def record_message(session: Session, playbook: Playbook, inbound: Inbound, match: Match,
                   *, mailbox: str, now: dt.datetime) -> Handled:
    """Record one matched message and what it changes; a Message-ID seen before changes nothing."""
    at = message_time(inbound, now)
    row = InboundMessage(
        message_id=inbound.message_id, mailbox=mailbox, uid=inbound.uid, kind=inbound.kind,
        matched_by=match.matched_by, probable=match.probable, onboarding_id=match.onboarding_id,
        communication_id=match.communication_id, sender=inbound.sender[:254],
        subject=plain(inbound.subject, 500), sent_at=at, read_at=now,
        excerpt=plain(inbound.excerpt, 1000) or None, detail={"reason": inbound.reason})
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return _handled(inbound, "duplicate", match, "already recorded")
    onboarding = session.get(Onboarding, match.onboarding_id)
    assert onboarding is not None
    if inbound.bounce is not None and match.communication_id is not None:
        return _bounced(session, playbook, inbound, match, row, onboarding, now)
    if inbound.kind == "auto_reply" or inbound.kind == "bounce":
        log_event(session, "auto_reply_received", actor=ACTOR, onboarding_id=onboarding.id,
                  at=now, message_id=inbound.message_id, reason=inbound.reason)
        return _handled(inbound, "auto_reply", match, inbound.reason)
    if match.probable:
        log_event(session, "probable_reply_received", actor=ACTOR, onboarding_id=onboarding.id,
                  at=now, message_id=inbound.message_id, sender=inbound.sender)
        _notify_reply(session, playbook, onboarding, row, match, now)
        return _handled(inbound, "probable_reply", match,
                        "shown to the owner, not recorded as a response")
    log_client_response(session, onboarding.id, kind="response", template=match.template,
                        note=plain(f"reply by mail: {inbound.subject}", 500), at=at, by=ACTOR,
                        message_id=inbound.message_id)
    _notify_reply(session, playbook, onboarding, row, match, now)
    answered = match.template or "our last message"
    return _handled(inbound, "reply", match, f"client response to {answered} recorded")


def _bounced(session: Session, playbook: Playbook, inbound: Inbound, match: Match,
             row: InboundMessage, onboarding: Onboarding, now: dt.datetime) -> Handled:
    assert inbound.bounce is not None
    sent = session.get(Communication, match.communication_id)
    assert sent is not None
    bad = ", ".join(inbound.bounce.recipients) or sent.recipients
    diagnostic = plain(inbound.bounce.diagnostic, 1000) or inbound.bounce.status
    row.detail = {"reason": inbound.reason, "recipients": list(inbound.bounce.recipients),
                  "status": inbound.bounce.status, "diagnostic": diagnostic}
    if sent.status != "bounced":
        sent.status, sent.last_error = "bounced", f"bounced: {diagnostic}"
    log_event(session, "message_bounced", actor=ACTOR, onboarding_id=onboarding.id, at=now,
              template=sent.template, key=sent.idempotency_key, address=bad,
              status=inbound.bounce.status)
    notify_delivery_problem(session, playbook, sent, now, problem=diagnostic, reason="bounced",
                            extra={"bad_address": bad})
    return _handled(inbound, "bounce", match, f"{sent.template} to {bad} marked bounced")


def _notify_reply(session: Session, playbook: Playbook, onboarding: Onboarding,
                  row: InboundMessage, match: Match, now: dt.datetime) -> None:
    session.flush()
    notify_owner(session, playbook, onboarding, now, template="client_reply",
                 key=keys.client_reply(row.id), context={
                     "client": {"id": onboarding.id, "name": onboarding.client_name,
                                "stage": playbook.stage(onboarding.stage).name},
                     "reply": {"probable": match.probable, "sender": row.sender,
                               "subject": row.subject or "(no subject)",
                               "at": local_time(playbook, row.sent_at),
                               "excerpt": row.excerpt or "",
                               "answered": match.template or "our last message",
                               "paused_until": local_time(
                                   playbook, reply_pause_end(playbook, row.sent_at))}})


def _handled(inbound: Inbound, outcome: Outcome, match: Match | None, detail: str) -> Handled:
    return Handled(uid=inbound.uid, message_id=inbound.message_id, sender=inbound.sender,
                   subject=plain(inbound.subject, 200), outcome=outcome,
                   onboarding_id=match.onboarding_id if match else None,
                   matched_by=match.matched_by if match else None, detail=detail)


def ignored(inbound: Inbound, why: str) -> Handled:
    """A message that concerns no onboarding: nothing is recorded."""
    return Handled(uid=inbound.uid, message_id=inbound.message_id, sender=inbound.sender,
                   subject=plain(inbound.subject, 200), outcome="ignored", onboarding_id=None,
                   matched_by=None, detail=why)


def already_recorded(session: Session, message_id: str) -> bool:
    """True when this Message-ID was recorded by an earlier pass."""
    return session.scalars(select(InboundMessage.id).where(
        InboundMessage.message_id == message_id)).first() is not None
