"""Speed: close to kickoff, kickoff to ready, and how long clients stay in each stage."""

from __future__ import annotations

import math

import pandas as pd

from db.playbook import STAGE_ORDER
from tasks.calendar.business_time import BusinessCalendar
from tasks.calendar.vectorised import business_days
from tasks.reporting.kpis.periods import in_period, median_of


def with_durations(onboardings: pd.DataFrame, calendar: BusinessCalendar) -> pd.DataFrame:
    """Add close→kickoff and kickoff→ready in business days (computed once per client)."""
    if "close_to_kickoff_days" in onboardings.columns:
        return onboardings
    return onboardings.assign(
        close_to_kickoff_days=business_days(calendar, onboardings["closed_at"],
                                            onboardings["kickoff_at"]),
        kickoff_to_ready_days=business_days(calendar, onboardings["kickoff_at"],
                                            onboardings["ready_at"]),
    )


def median_close_to_kickoff(onboardings: pd.DataFrame, start: pd.Timestamp,
                            end: pd.Timestamp) -> float:
    """Median business days from close to kickoff, over kickoffs held in the period."""
    rows = onboardings[in_period(onboardings["kickoff_at"], start, end)]
    return median_of(rows["close_to_kickoff_days"])


def median_kickoff_to_ready(onboardings: pd.DataFrame, start: pd.Timestamp,
                            end: pd.Timestamp) -> float:
    """Median business days from kickoff to ready-to-deliver, over handoffs in the period."""
    rows = onboardings[in_period(onboardings["ready_at"], start, end)]
    return median_of(rows["kickoff_to_ready_days"])


def stage_stays(onboardings: pd.DataFrame, transitions: pd.DataFrame,
                calendar: BusinessCalendar) -> pd.DataFrame:
    """Every completed stay in a stage: onboarding, stage, entered, left, business days."""
    if transitions.empty:
        return pd.DataFrame({"onboarding_id": pd.Series(dtype="int64"),
                             "stage": pd.Series(dtype="object"),
                             "entered": pd.Series(dtype="datetime64[ns, UTC]"),
                             "left": pd.Series(dtype="datetime64[ns, UTC]"),
                             "days": pd.Series(dtype="float64")})
    exits = transitions.rename(columns={"at": "left", "from_stage": "stage"})
    entries = transitions.rename(columns={"at": "entered", "to_stage": "stage"})
    first = onboardings[["id", "closed_at"]].rename(columns={"id": "onboarding_id",
                                                             "closed_at": "entered"})
    first = first.assign(stage=STAGE_ORDER[0])
    entries = pd.concat([first, entries[["onboarding_id", "entered", "stage"]]])
    stays = exits[["onboarding_id", "stage", "left"]].merge(
        entries, on=["onboarding_id", "stage"], how="inner")
    stays = stays[stays["entered"] <= stays["left"]]
    stays = stays.sort_values("entered").drop_duplicates(["onboarding_id", "stage", "left"],
                                                         keep="last")
    stays = stays.assign(days=business_days(calendar, stays["entered"], stays["left"]))
    return stays.reset_index(drop=True)


def stage_aging(onboardings: pd.DataFrame, stays: pd.DataFrame, calendar: BusinessCalendar,
                start: pd.Timestamp, end: pd.Timestamp,
                now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Per stage: median days of stays ended in the period, and clients in it `now` (or end).

    The current stage is what the record says today, so "now" should be the load instant.
    """
    done = stays[in_period(stays["left"], start, end)]
    now = end if now is None else now
    active = onboardings[(onboardings["status"] == "active") & onboardings["ready_at"].isna()
                         & (onboardings["stage_entered_at"] <= now)]
    ages = business_days(calendar, active["stage_entered_at"],
                         pd.Series(now, index=active.index))
    active = active.assign(age=ages)
    rows = []
    for stage in STAGE_ORDER:
        stage_done = done[done["stage"] == stage]["days"]
        here = active[active["stage"] == stage]["age"]
        rows.append({"stage": stage, "completed": int(len(stage_done)),
                     "median_days": median_of(stage_done),
                     "in_stage_now": int(len(here)), "median_age_now": median_of(here),
                     "max_age_now": float(here.max()) if len(here) else math.nan})
    return pd.DataFrame(rows)
