"""Messages out and in: the outbox, client replies, and what the inbox sweep read."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base

# Outbox statuses that count as delivered: a demo client's mail is suppressed, never sent.
DELIVERED = ("sent", "suppressed")


class Communication(Base):
    """The outbox: every message, keyed so it is sent at most once."""

    __tablename__ = "communications"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int | None] = mapped_column(ForeignKey("onboardings.id"), index=True)
    template: Mapped[str] = mapped_column(String(64))
    lane: Mapped[str | None] = mapped_column(String(8))
    audience: Mapped[str] = mapped_column(String(20))  # client, team, founder
    recipients: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str] = mapped_column(Text)
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(40))  # the delivery pass holding it
    claimed_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    due_at: Mapped[dt.datetime | None]
    sent_at: Mapped[dt.datetime | None]
    message_id: Mapped[str | None] = mapped_column(String(200), index=True)  # replies thread
    sla_key: Mapped[str | None] = mapped_column(String(64))
    late_business_minutes: Mapped[int | None] = mapped_column(Integer)
    cycle: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'sending', 'sent', 'failed', 'uncertain', 'bounced', "
            "'suppressed')",
            name="status_known"
        ),
    )


class ClientResponse(Base):
    """A client reply, or a follow-up request asking for status (a red flag when frequent)."""

    __tablename__ = "client_responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # response | followup_request | clarification
    template: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[dt.datetime]
    note: Mapped[str | None] = mapped_column(Text)
    # The reply's own Message-ID when the inbox sweep recorded it: one response per message.
    message_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    __table_args__ = (
        CheckConstraint("kind IN ('response', 'followup_request', 'clarification')", name="kind"),
    )


class InboundMessage(Base):
    """A message from the onboarding mailbox that concerns an onboarding; one per Message-ID."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    mailbox: Mapped[str] = mapped_column(String(400))
    uid: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(20))  # reply | auto_reply | bounce
    matched_by: Mapped[str] = mapped_column(String(20))  # thread | reply_to | contact
    probable: Mapped[bool] = mapped_column(Boolean, default=False)  # contact match: not acted on
    onboarding_id: Mapped[int | None] = mapped_column(ForeignKey("onboardings.id"), index=True)
    communication_id: Mapped[int | None] = mapped_column(ForeignKey("communications.id"),
                                                         index=True)
    sender: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[dt.datetime]  # the message's Date, never later than when it was read
    read_at: Mapped[dt.datetime]
    excerpt: Mapped[str | None] = mapped_column(Text)  # a reply's first lines
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # why classified so
    __table_args__ = (
        CheckConstraint("kind IN ('reply', 'auto_reply', 'bounce')", name="kind_known"),
        CheckConstraint("matched_by IN ('thread', 'reply_to', 'contact')", name="match_known"),
    )


class MailboxCursor(Base):
    """How far the inbox sweep has read one mailbox folder: its UIDVALIDITY and last UID."""

    __tablename__ = "mailbox_cursors"

    mailbox: Mapped[str] = mapped_column(String(400), primary_key=True)  # user@host:port/folder
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime]
