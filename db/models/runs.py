"""Coordination between workers: sweep leases and paced run starts."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    ForeignKey,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base


class Lease(Base):
    """A named lock with expiry, so two workers never run the same sweep at once."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime]


class RunStart(Base):
    """A client run waiting to be started; paced starts remove it once its run exists.

    A burst of starts (reconcile after an outage, an import, a webhook storm) waits here instead
    of in Prefect, so the server only ever holds as many starting runs as the runner can take.
    """

    __tablename__ = "run_starts"

    onboarding_id: Mapped[int] = mapped_column(ForeignKey("onboardings.id"), primary_key=True)
    requested_at: Mapped[dt.datetime] = mapped_column(index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # restarts: part of the run's key
