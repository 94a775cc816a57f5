"""Quality: rework before handoff, incidents after it, and the red flags seen on the way."""

from __future__ import annotations

import math

import pandas as pd

from tasks.calendar.business_time import BusinessCalendar
from tasks.calendar.vectorised import business_days
from tasks.reporting.kpis.frames import Frames
from tasks.reporting.kpis.periods import in_period

INCIDENT_WINDOW = pd.Timedelta(days=30)
SCOPE_WINDOW = pd.Timedelta(days=14)

def handoff_rework_rate(onboardings: pd.DataFrame, qa_reviews: pd.DataFrame,
                        start: pd.Timestamp, end: pd.Timestamp) -> float:
    """Share of clients handed off in the period who failed a QA check before handoff."""
    handed = onboardings[in_period(onboardings["ready_at"], start, end)][["id", "ready_at"]]
    if handed.empty:
        return math.nan
    failed = qa_reviews[~qa_reviews["passed"].astype(bool)].merge(
        handed, left_on="onboarding_id", right_on="id")
    failed = failed[failed["at"] <= failed["ready_at"]]
    return failed["onboarding_id"].nunique() / len(handed)


def first_30_day_incidents(onboardings: pd.DataFrame, incidents: pd.DataFrame,
                           start: pd.Timestamp, end: pd.Timestamp) -> int:
    """Incidents in the period that happened within 30 days of the client's handoff."""
    rows = incidents[in_period(incidents["at"], start, end)].merge(
        onboardings[["id", "ready_at"]], left_on="onboarding_id", right_on="id")
    early = (rows["at"] >= rows["ready_at"]) & (rows["at"] <= rows["ready_at"] + INCIDENT_WINDOW)
    return int(early.sum())


def red_flags(frames: Frames, calendar: BusinessCalendar, cadence_days: float,
              start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Per client, the blueprint's red-flag indicators seen in the period; only flagged clients.

    frequent kickoff reschedules (2+), recurring missing access (2+ blockers), scope ambiguity
    in the first 14 days, a packet needing several revisions, and status requests more often
    than the update cadence (two requests less than one cadence apart).
    """
    ob = frames.onboardings.set_index("id")
    resched = frames.reschedules[in_period(frames.reschedules["at"], start, end)]
    resched_n = resched.groupby("onboarding_id").size()
    blockers = frames.blockers[in_period(frames.blockers["opened_at"], start, end)]
    access_n = blockers[blockers["type"] == "missing_access"].groupby("onboarding_id").size()
    scope = blockers[blockers["type"] == "scope_ambiguity"].merge(
        frames.onboardings[["id", "closed_at"]], left_on="onboarding_id", right_on="id")
    scope = scope[scope["opened_at"] <= scope["closed_at"] + SCOPE_WINDOW]
    scope_n = scope.groupby("onboarding_id").size()
    packets = frames.packets[in_period(frames.packets["created_at"], start, end)]
    revisions = packets.groupby("onboarding_id")["revision"].max()
    asks = frames.responses[(frames.responses["kind"] == "followup_request")
                            & (frames.responses["at"] < end)].sort_values("at")
    asks = asks.assign(previous=asks.groupby("onboarding_id")["at"].shift())
    asks = asks[in_period(asks["at"], start, end) & asks["previous"].notna()]
    gaps = business_days(calendar, asks["previous"], asks["at"])
    too_often = asks[gaps < cadence_days].groupby("onboarding_id").size()
    table = pd.DataFrame({
        "kickoff_reschedules": resched_n, "missing_access_blockers": access_n,
        "early_scope_ambiguity": scope_n, "packet_revisions": revisions,
        "status_asks_inside_cadence": too_often,
    }).fillna(0).astype("int64")
    flags = pd.DataFrame({
        "frequent_kickoff_reschedules": table["kickoff_reschedules"] >= 2,
        "recurring_missing_access": table["missing_access_blockers"] >= 2,
        "early_scope_misunderstanding": table["early_scope_ambiguity"] >= 1,
        "packet_multiple_revisions": table["packet_revisions"] > 1,
        "status_asks_above_cadence": table["status_asks_inside_cadence"] >= 1,
    })
    flags["flags"] = flags.sum(axis=1)
    flags = flags[flags["flags"] > 0]
    out = flags.join(ob[["client_name", "segment", "offer", "owner_email"]], how="left")
    out.index.name = "onboarding_id"
    return out.reset_index().sort_values(["flags", "onboarding_id"], ascending=[False, True])


RED_FLAG_LABELS = {
    "frequent_kickoff_reschedules": "frequent kickoff reschedules",
    "recurring_missing_access": "recurring missing access",
    "early_scope_misunderstanding": "scope misunderstanding in the first 14 days",
    "packet_multiple_revisions": "handoff packet needing several revisions",
    "status_asks_above_cadence": "status requests above the update cadence",
}
