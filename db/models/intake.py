"""How clients come in and what they send: won deals from CRMs, and the client portal."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base


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
