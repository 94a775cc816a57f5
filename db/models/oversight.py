"""What the founder and the review loop keep: exceptions, decisions, interruptions, risks,
corrective actions, and who is away."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base


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


class Risk(Base):
    """A risk register entry: trigger, owner, mitigation and review frequency. At most one open
    risk per client and category (the partial unique index is the arbiter between sweeps)."""

    __tablename__ = "risks"

    id: Mapped[int] = mapped_column(primary_key=True)
    onboarding_id: Mapped[int | None] = mapped_column(ForeignKey("onboardings.id"), index=True)
    category: Mapped[str] = mapped_column(String(40))
    trigger: Mapped[str] = mapped_column(Text)  # what fired, in words (or the note, by hand)
    owner_email: Mapped[str] = mapped_column(String(254))
    mitigation: Mapped[str] = mapped_column(Text)  # the first action
    review_every_days: Mapped[int] = mapped_column(Integer, default=7)  # business days
    opened_at: Mapped[dt.datetime]
    closed_at: Mapped[dt.datetime | None]
    lane: Mapped[str | None] = mapped_column(String(8))
    opened_by: Mapped[str | None] = mapped_column(String(254))
    next_review_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    reviewed_at: Mapped[dt.datetime | None]
    close_note: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        Index("uq_risks_open_category", "onboarding_id", "category", unique=True,
              sqlite_where=text("closed_at IS NULL"),
              postgresql_where=text("closed_at IS NULL")),
    )


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
