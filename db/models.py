"""The record of truth: SQLAlchemy 2 models. Alembic (db/migrations) owns the schema."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

UTC = dt.UTC


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores UTC and always hands back an aware UTC datetime, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored; attach a zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> dt.datetime:
    """Now, aware, in UTC."""
    return dt.datetime.now(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime()}


class Onboarding(Base):
    """One client's onboarding: the seed's required fields plus what the engine needs."""

    __tablename__ = "onboardings"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_name: Mapped[str] = mapped_column(String(200))
    segment: Mapped[str] = mapped_column(String(100))
    offer: Mapped[str] = mapped_column(String(200))
    owner_email: Mapped[str] = mapped_column(String(254))
    backup_email: Mapped[str] = mapped_column(String(254))
    contact_emails: Mapped[str] = mapped_column(Text)  # comma-separated, validated on input
    stage: Mapped[str] = mapped_column(String(40), index=True)
    stage_entered_at: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(String(20), default="active", index=True)
    next_action: Mapped[str | None] = mapped_column(Text)
    next_action_due: Mapped[dt.datetime | None]
    blocker_tag: Mapped[str | None] = mapped_column(String(40))
    closed_at: Mapped[dt.datetime]
    kickoff_at: Mapped[dt.datetime | None]
    kickoff_by: Mapped[dt.date | None] = mapped_column(Date)  # committed kickoff window end
    first_milestone: Mapped[dt.date | None] = mapped_column(Date)
    ready_at: Mapped[dt.datetime | None]
    playbook_version: Mapped[str] = mapped_column(String(40))
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    # Loaded by `handoff demo`: fictional, so its mail is suppressed and `demo --clear` removes it.
    demo: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), index=True)

    artifacts: Mapped[list[Artifact]] = relationship(back_populates="onboarding")

    __mapper_args__ = {"version_id_col": row_version}
    __table_args__ = (
        CheckConstraint(
            "status IN ('active', 'ready', 'cancelled')", name="status_known"
        ),
        Index("ix_onboardings_status_stage", "status", "stage"),
    )

    @property
    def contacts(self) -> list[str]:
        return [c for c in self.contact_emails.split(",") if c]


class Artifact(Base):
    """A required artifact or checklist item that exists for an onboarding."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(40))
    recorded_at: Mapped[dt.datetime]
    recorded_by: Mapped[str] = mapped_column(String(254))
    note: Mapped[str | None] = mapped_column(Text)

    onboarding: Mapped[Onboarding] = relationship(back_populates="artifacts")
    __table_args__ = (UniqueConstraint("onboarding_id", "key", name="one_per_key"),)


class Blocker(Base):
    """Something stopping progress, classified by the playbook's taxonomy."""

    __tablename__ = "blockers"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    type: Mapped[str] = mapped_column(String(40))
    critical: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(Text)
    owner_email: Mapped[str] = mapped_column(String(254))
    opened_at: Mapped[dt.datetime]
    opened_by: Mapped[str] = mapped_column(String(254))
    resolved_at: Mapped[dt.datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(254))
    affects_timeline: Mapped[bool] = mapped_column(Boolean, default=False)


class Event(Base):
    """The append-only log of every change: who, when, what, why. Triggers refuse UPDATE/DELETE."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int | None] = mapped_column(ForeignKey("onboardings.id"), index=True)
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(254))
    kind: Mapped[str] = mapped_column(String(60), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str | None] = mapped_column(Text)


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


class SlaException(Base):
    """A justified exception to an SLA; the rationale is mandatory."""

    __tablename__ = "sla_exceptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    sla_key: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String(254))
    at: Mapped[dt.datetime]
    __table_args__ = (CheckConstraint("length(trim(reason)) > 0", name="reason_required"),)


class FounderDecision(Base):
    """A decision inside the founder's boundaries; only the founder may be the decider."""

    __tablename__ = "founder_decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int | None] = mapped_column(ForeignKey("onboardings.id"), index=True)
    boundary: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(Text)
    decided_by: Mapped[str] = mapped_column(String(254))
    at: Mapped[dt.datetime]


class FounderInterruption(Base):
    """Each time the founder was pulled into onboarding work."""

    __tablename__ = "founder_interruptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int | None] = mapped_column(ForeignKey("onboardings.id"), index=True)
    category: Mapped[str] = mapped_column(String(40))
    avoidable: Mapped[bool] = mapped_column(Boolean)
    lane: Mapped[str | None] = mapped_column(String(8))
    at: Mapped[dt.datetime]
    note: Mapped[str | None] = mapped_column(Text)


class QaReview(Base):
    """A handoff QA check; a failure carries its rework reason."""

    __tablename__ = "qa_reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    passed: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(String(40))
    by: Mapped[str] = mapped_column(String(254))
    at: Mapped[dt.datetime]


class Incident(Base):
    """A delivery incident in the first 30 days after handoff."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    severity: Mapped[str] = mapped_column(String(20), default="minor")
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime]


class Risk(Base):
    """A risk register entry: trigger, owner, mitigation and review frequency."""

    __tablename__ = "risks"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int | None] = mapped_column(ForeignKey("onboardings.id"), index=True)
    category: Mapped[str] = mapped_column(String(40))
    trigger: Mapped[str] = mapped_column(Text)
    owner_email: Mapped[str] = mapped_column(String(254))
    mitigation: Mapped[str] = mapped_column(Text)
    review_every_days: Mapped[int] = mapped_column(Integer, default=7)
    opened_at: Mapped[dt.datetime]
    closed_at: Mapped[dt.datetime | None]


class CorrectiveAction(Base):
    """An action created by a KPI threshold break, or by hand; open until closed with a note."""

    __tablename__ = "corrective_actions"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_key: Mapped[str] = mapped_column(String(200), unique=True)  # threshold + period
    title: Mapped[str] = mapped_column(Text)
    owner_email: Mapped[str] = mapped_column(String(254))
    lane: Mapped[str | None] = mapped_column(String(8))
    due: Mapped[dt.date] = mapped_column(Date)
    created_at: Mapped[dt.datetime]
    closed_at: Mapped[dt.datetime | None]
    close_note: Mapped[str | None] = mapped_column(Text)


class OwnerAway(Base):
    """An owner out of office: their backup takes over until the date."""

    __tablename__ = "owner_away"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    since: Mapped[dt.datetime]
    until: Mapped[dt.date] = mapped_column(Date)


class Packet(Base):
    """An assembled handoff packet; every revision is kept."""

    __tablename__ = "packets"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    markdown: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    __table_args__ = (UniqueConstraint("onboarding_id", "revision", name="one_per_revision"),)


class Audit(Base):
    """The 30-day post-onboarding audit of one client."""

    __tablename__ = "audits"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), unique=True)
    at: Mapped[dt.datetime]
    first_milestone_met: Mapped[bool | None] = mapped_column(Boolean)
    incidents: Mapped[int] = mapped_column(Integer)
    churn_risk: Mapped[bool] = mapped_column(Boolean)
    notes: Mapped[str | None] = mapped_column(Text)


class Lease(Base):
    """A named lock with expiry, so two workers never run the same sweep at once."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime]


class DealLink(Base):
    """A won deal from a CRM or payment provider, and the onboarding it started.

    The unique (source, external_id) pair is what makes a redelivered or polled deal start one
    onboarding, whatever the provider's delivery ids say.
    """

    __tablename__ = "deal_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(20))  # hubspot | pipedrive | stripe | generic
    external_id: Mapped[str] = mapped_column(String(200))
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    received_at: Mapped[dt.datetime]
    via: Mapped[str] = mapped_column(String(20))  # webhook | poll | form
    __table_args__ = (UniqueConstraint("source", "external_id", name="one_per_deal"),)


class DealCursor(Base):
    """How far the CRM poll has read, per source, so each poll asks only for newer wins."""

    __tablename__ = "deal_cursors"

    source: Mapped[str] = mapped_column(String(20), primary_key=True)
    cursor: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[dt.datetime]


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


# -- the client portal -----------------------------------------------------------------------


class PortalLink(Base):
    """The state of one client's portal link. No row means version 1, issued at the close.

    The link itself is never stored: it is an HMAC of (onboarding, version) under a key kept
    outside the database (tasks/portal/links.py), so a database dump or backup cannot open a
    client's portal. Rotation bumps the version, which kills every older link.
    """

    __tablename__ = "portal_links"

    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    issued_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    last_opened_at: Mapped[dt.datetime | None]  # a browser ran the page (never a bare GET)


class IntakeAnswer(Base):
    """One answer of the client's intake questionnaire, as last saved (JSON: str or list)."""

    __tablename__ = "intake_answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    field_key: Mapped[str] = mapped_column(String(64))
    value: Mapped[Any] = mapped_column(JSON)
    saved_at: Mapped[dt.datetime]
    __table_args__ = (UniqueConstraint("onboarding_id", "field_key", name="one_per_field"),)


class IntakeSubmission(Base):
    """The submitted questionnaire: one per client (the unique key makes two tabs submit once)."""

    __tablename__ = "intake_submissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), unique=True)
    submitted_at: Mapped[dt.datetime]
    answers: Mapped[dict[str, Any]] = mapped_column(JSON)  # the answers as submitted


class PortalUpload(Base):
    """A file a client uploaded, stored under uploads/<onboarding>/<stored_name>."""

    __tablename__ = "portal_uploads"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    field_key: Mapped[str] = mapped_column(String(64))
    original_name: Mapped[str] = mapped_column(String(200))  # shown only, never a path
    stored_name: Mapped[str] = mapped_column(String(80), unique=True)
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[dt.datetime]
    notified: Mapped[bool] = mapped_column(Boolean, default=False)  # owner told about it


class RunStart(Base):
    """A client run waiting to be started; paced starts remove it once its run exists.

    A burst of starts (reconcile after an outage, an import, a webhook storm) waits here instead
    of in Prefect, so the server only ever holds as many starting runs as the runner can take.
    """

    __tablename__ = "run_starts"

    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), primary_key=True)
    requested_at: Mapped[dt.datetime] = mapped_column(index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # restarts: part of the run's key
