"""One client's record: the onboarding, the facts recorded about it, and the event log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.models.base import Base, utcnow


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
    playbook_version: Mapped[str] = mapped_column(String(40))  # the playbook it started under
    # What the current stage required when the client entered it (item keys), and the playbook
    # version that said so: a later edit adds requirements from the next stage entry, or now
    # with `handoff playbook apply --apply-now`. None: a record from before they were kept.
    stage_items: Mapped[list[str] | None] = mapped_column(JSON)
    stage_playbook_version: Mapped[str | None] = mapped_column(String(40))
    # The client's IANA timezone: their mail waits for their working hours too. None: the
    # business's timezone (playbook calendar.timezone).
    client_tz: Mapped[str | None] = mapped_column(String(64))
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


class Packet(Base):
    """An assembled handoff packet; every revision is kept."""

    __tablename__ = "packets"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    markdown: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    __table_args__ = (UniqueConstraint("onboarding_id", "revision", name="one_per_revision"),)


class Incident(Base):
    """A delivery incident in the first 30 days after handoff."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), index=True)
    severity: Mapped[str] = mapped_column(String(20), default="minor")
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime]


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
