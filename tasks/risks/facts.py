"""What the risk triggers read beyond the sweep snapshot, loaded in five set-based queries (each
joined to the active onboardings, as the snapshot's are) whatever the number of clients."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from db.models import (
    ClientResponse,
    Communication,
    FounderDecision,
    Onboarding,
    QaReview,
    Risk,
)

TROUBLE = ("bounced", "failed", "uncertain")  # the outbox states a risk trigger may name


@dataclass
class RiskFacts:
    """Per onboarding id: founder decisions, failed QA, client messages in trouble, follow-up
    requests; per (onboarding, category): the open risk and the last close."""

    decisions: dict[int, list[tuple[str, dt.datetime]]] = field(default_factory=dict)
    qa_failures: dict[int, list[dt.datetime]] = field(default_factory=dict)
    troubled: dict[int, list[tuple[str, str, dt.datetime]]] = field(default_factory=dict)
    followups: dict[int, list[dt.datetime]] = field(default_factory=dict)
    open: dict[tuple[int, str], int] = field(default_factory=dict)
    closed: dict[tuple[int, str], dt.datetime] = field(default_factory=dict)


def _active(column: Any) -> Any:
    """Rows of active onboardings: the same population the snapshot loads."""
    return and_(column == Onboarding.id, Onboarding.status == "active")


def load_risk_facts(session: Session) -> RiskFacts:
    """The facts of every active onboarding (a superset of a sweep's snapshot)."""
    decisions: dict[int, list[tuple[str, dt.datetime]]] = defaultdict(list)
    for ob_id, boundary, at in session.execute(
            select(FounderDecision.onboarding_id, FounderDecision.boundary, FounderDecision.at)
            .join(Onboarding, _active(FounderDecision.onboarding_id))):
        decisions[ob_id].append((boundary, at))
    failures: dict[int, list[dt.datetime]] = defaultdict(list)
    for ob_id, at in session.execute(select(QaReview.onboarding_id, QaReview.at)
            .join(Onboarding, _active(QaReview.onboarding_id)).where(QaReview.passed.is_(False))):
        failures[ob_id].append(at)
    troubled: dict[int, list[tuple[str, str, dt.datetime]]] = defaultdict(list)
    for ob_id, template, status, at in session.execute(
            select(Communication.onboarding_id, Communication.template, Communication.status,
                   Communication.created_at)
            .join(Onboarding, _active(Communication.onboarding_id))
            .where(Communication.audience == "client",
                   Communication.status.in_(TROUBLE))):
        troubled[ob_id].append((template, status, at))
    followups: dict[int, list[dt.datetime]] = defaultdict(list)
    for ob_id, at in session.execute(select(ClientResponse.onboarding_id, ClientResponse.at)
            .join(Onboarding, _active(ClientResponse.onboarding_id))
            .where(ClientResponse.kind == "followup_request")):
        followups[ob_id].append(at)
    facts = RiskFacts(decisions=dict(decisions), qa_failures=dict(failures),
                      troubled=dict(troubled), followups=dict(followups))
    for risk_id, ob_id, category, closed_at in session.execute(
            select(Risk.id, Risk.onboarding_id, Risk.category, Risk.closed_at)
            .join(Onboarding, _active(Risk.onboarding_id))):
        key = (ob_id, category)
        if closed_at is None:
            facts.open[key] = risk_id
        elif key not in facts.closed or closed_at > facts.closed[key]:
            facts.closed[key] = closed_at
    return facts
