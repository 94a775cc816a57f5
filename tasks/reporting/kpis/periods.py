"""Periods: the half-open windows every KPI counts over, and the weeks and months of the reports."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd


def in_period(series: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """Which instants fall in [start, end) (missing ones do not)."""
    return (series >= start) & (series < end)


def median_of(values: pd.Series) -> float:
    """The median of the values present, NaN when there are none."""
    values = values.dropna()
    return float(values.median()) if len(values) else math.nan


def as_utc(value: dt.datetime | pd.Timestamp) -> pd.Timestamp:
    """A timestamp in UTC (a naive one is taken as UTC)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def week_start(at: dt.datetime | pd.Timestamp, tz: str) -> pd.Timestamp:
    """Monday 00:00 (business timezone) of the week containing `at`, in UTC."""
    local = as_utc(at).tz_convert(tz)
    monday = (local - pd.Timedelta(days=local.weekday())).normalize()
    return monday.tz_convert("UTC")


def month_bounds(month: str, tz: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[first instant, first instant of next month) of 'YYYY-MM' in the business timezone."""
    start = pd.Timestamp(f"{month}-01").tz_localize(tz)
    end = (start + pd.offsets.MonthBegin(1)).tz_localize(None).tz_localize(tz)
    return start.tz_convert("UTC"), end.tz_convert("UTC")
