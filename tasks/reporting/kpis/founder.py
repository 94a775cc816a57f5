"""Founder leverage: how often the founder is interrupted, and how much of it was avoidable."""

from __future__ import annotations

import math

import pandas as pd

from tasks.reporting.kpis.periods import in_period


def interruptions_by_category(interruptions: pd.DataFrame, start: pd.Timestamp,
                              end: pd.Timestamp) -> pd.DataFrame:
    """Founder interruptions per week in the period, by category, avoidable vs required."""
    weeks = max((end - start) / pd.Timedelta(days=7), 1e-9)
    rows = interruptions[in_period(interruptions["at"], start, end)]
    kind = rows["avoidable"].astype(bool).map({True: "avoidable", False: "required"})
    table = rows.assign(kind=kind).pivot_table(index="category", columns="kind", values="at",
                                               aggfunc="count", fill_value=0)
    table = table.reindex(columns=["avoidable", "required"], fill_value=0)
    table["total"] = table["avoidable"] + table["required"]
    table["per_week"] = table["total"] / weeks
    return table.sort_values("total", ascending=False).reset_index()


def interruptions_per_week(interruptions: pd.DataFrame, start: pd.Timestamp,
                           end: pd.Timestamp) -> float:
    """Founder interruptions per week in the period."""
    weeks = max((end - start) / pd.Timedelta(days=7), 1e-9)
    return float(in_period(interruptions["at"], start, end).sum() / weeks)


def avoidable_share(interruptions: pd.DataFrame, start: pd.Timestamp,
                    end: pd.Timestamp) -> float:
    """Share of the period's founder interruptions the system could have handled."""
    rows = interruptions[in_period(interruptions["at"], start, end)]
    return float(rows["avoidable"].astype(bool).mean()) if len(rows) else math.nan
