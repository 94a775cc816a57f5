"""Blockers: how many opened, how long they blocked, how fast they were resolved."""

from __future__ import annotations

import pandas as pd

from tasks.calendar.business_time import BusinessCalendar
from tasks.calendar.vectorised import business_days
from tasks.reporting.kpis.periods import in_period, median_of


def blockers_by_type(blockers: pd.DataFrame, calendar: BusinessCalendar, start: pd.Timestamp,
                     end: pd.Timestamp) -> pd.DataFrame:
    """Per blocker type: opened in the period, still open at its end, blocked business days."""
    opened = blockers[in_period(blockers["opened_at"], start, end)]
    live = blockers[(blockers["opened_at"] < end)
                    & (blockers["resolved_at"].isna() | (blockers["resolved_at"] > start))]
    clipped_start = live["opened_at"].clip(lower=start)
    clipped_end = live["resolved_at"].fillna(end).clip(upper=end)
    blocked = business_days(calendar, clipped_start, clipped_end)
    resolved = blockers[in_period(blockers["resolved_at"], start, end)]
    resolution = business_days(calendar, resolved["opened_at"], resolved["resolved_at"])
    table = pd.DataFrame({
        "opened": opened.groupby("type").size(),
        "open_at_end": live[live["resolved_at"].isna() | (live["resolved_at"] >= end)]
        .groupby("type").size(),
        "blocked_days": blocked.groupby(live["type"]).sum(),
        "median_resolution_days": resolution.groupby(resolved["type"]).median(),
    })
    table[["opened", "open_at_end"]] = table[["opened", "open_at_end"]].fillna(0).astype("int64")
    table["blocked_days"] = table["blocked_days"].fillna(0.0)
    table.index.name = "type"
    return table.sort_values(["opened", "blocked_days"], ascending=False).reset_index()


def median_resolution_days(blockers: pd.DataFrame, calendar: BusinessCalendar,
                           start: pd.Timestamp, end: pd.Timestamp) -> float:
    """Median business days to resolve the blockers resolved in the period."""
    resolved = blockers[in_period(blockers["resolved_at"], start, end)]
    return median_of(business_days(calendar, resolved["opened_at"], resolved["resolved_at"]))
