"""The 30-day post-onboarding audit: milestone, incidents and early churn signals."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from sqlalchemy.orm import Session

from db.playbook import Playbook
from tasks.onboarding import records
from tasks.onboarding.records import log_event
from tasks.reporting.kpis.quality import INCIDENT_WINDOW, red_flags
from tasks.reporting.kpis.table import Context
from tasks.reporting.shared import context_for


def audit_findings(ctx: Context, as_of: pd.Timestamp) -> pd.DataFrame:
    """Clients 30+ days past handoff without an audit: milestone, incidents, churn signals."""
    f = ctx.frames
    ob = f.onboardings
    due = ob[ob["ready_at"].notna() & (ob["ready_at"] + INCIDENT_WINDOW <= as_of)
             & ~ob["id"].isin(f.audits["onboarding_id"])]
    if due.empty:
        return pd.DataFrame(columns=["onboarding_id", "first_milestone_met", "incidents",
                                     "churn_risk", "notes"])
    incidents = f.incidents.merge(due[["id", "ready_at", "first_milestone"]],
                                  left_on="onboarding_id", right_on="id")
    incidents = incidents[(incidents["at"] >= incidents["ready_at"])
                          & (incidents["at"] <= incidents["ready_at"] + INCIDENT_WINDOW)]
    count = incidents.groupby("onboarding_id").size()
    serious = incidents[incidents["severity"].isin(["major", "critical"])]
    milestone = pd.to_datetime(serious["first_milestone"]).dt.tz_localize("UTC")
    missed = serious[serious["at"] <= milestone + pd.Timedelta(days=1)]["onboarding_id"]
    asks = f.responses[(f.responses["kind"] == "followup_request")].merge(
        due[["id", "ready_at"]], left_on="onboarding_id", right_on="id")
    asks_after = asks[asks["at"] > asks["ready_at"]].groupby("onboarding_id").size()
    flags = red_flags(f, ctx.calendar, ctx.cadence_days,
                           pd.Timestamp("1970-01-01", tz="UTC"), as_of).set_index(
        "onboarding_id")["flags"]
    had_serious, missed_ids = set(serious["onboarding_id"]), set(missed)
    rows = []
    for r in due.itertuples():
        n = int(count.get(r.id, 0))
        red = int(flags.get(r.id, 0))
        reasons = []
        if n >= 2:
            reasons.append(f"{n} incidents in 30 days")
        if r.id in had_serious:
            reasons.append("a major or critical incident")
        if int(asks_after.get(r.id, 0)):
            reasons.append("client still chasing status after handoff")
        if red >= 2:
            reasons.append(f"{red} red flags during onboarding")
        met = None if pd.isna(r.first_milestone) else r.id not in missed_ids
        rows.append({"onboarding_id": int(r.id), "first_milestone_met": met, "incidents": n,
                     "churn_risk": bool(reasons),
                     "notes": "; ".join(reasons) or "clean first 30 days"})
    return pd.DataFrame(rows)


def record_audits(session: Session, playbook: Playbook, as_of: dt.datetime) -> int:
    """Record the 30-day audit of every client due one; returns how many were recorded."""
    ctx = context_for(session, playbook, as_of)
    findings = audit_findings(ctx, pd.Timestamp(as_of))
    recorded = 0
    for row in findings.to_dict("records"):
        met = row["first_milestone_met"]
        recorded += records.record_audit(
            session, onboarding_id=int(row["onboarding_id"]), at=as_of,
            first_milestone_met=None if met is None or pd.isna(met) else bool(met),
            incidents=int(row["incidents"]), churn_risk=bool(row["churn_risk"]),
            notes=str(row["notes"]))
    if recorded:
        log_event(session, "audits_recorded", actor="handoff", at=as_of, count=recorded)
    return recorded
