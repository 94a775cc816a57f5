"""How each headline KPI reads: its label, unit, and which direction is better."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Metric:
    """How one KPI reads: its label, unit, and which direction is better."""

    key: str
    label: str
    unit: Literal["days", "pct", "count", "rate"]
    better: Literal["up", "down"]

    def format(self, value: float | None) -> str:
        """The value as a founder reads it: 14%, 3.2 d, 5."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        if self.unit == "pct":
            return f"{value * 100:.0f}%"
        if self.unit == "days":
            return f"{value:.1f} d"
        if self.unit == "rate":
            return f"{value:.1f}"
        return f"{value:.0f}"


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("median_close_to_kickoff_days", "close → kickoff (median)", "days", "down"),
    Metric("median_kickoff_to_ready_days", "kickoff → ready (median)", "days", "down"),
    Metric("checklist_completion_rate", "checklist completion", "pct", "up"),
    Metric("missing_artifact_rate", "missing artifacts at handoff QA", "pct", "down"),
    Metric("sla_adherence", "SLA adherence", "pct", "up"),
    Metric("repeat_followup_requests", "repeat follow-up requests", "count", "down"),
    Metric("handoff_rework_rate", "handoff rework", "pct", "down"),
    Metric("first_30_day_incidents", "first-30-day incidents", "count", "down"),
    Metric("founder_interruptions_per_week", "founder interruptions / week", "rate", "down"),
    Metric("avoidable_interruption_share", "avoidable interruptions", "pct", "down"),
    Metric("handoffs", "clients handed off", "count", "up"),
    Metric("median_first_response_days", "first client response (median)", "days", "down"),
    Metric("client_response_rate", "client messages answered", "pct", "up"),
    Metric("bounce_rate", "client messages bounced", "pct", "down"),
)}
