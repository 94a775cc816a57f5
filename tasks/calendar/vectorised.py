"""The business-time engine's vectorised twin: the same arithmetic over pandas Series.

`business_time.BusinessCalendar` answers one instant at a time; the KPIs ask for millions.
These functions read the calendar's days and hours and give the same answers
(tests/unit/test_vectorised_business_time.py checks them against the exact calendar)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from tasks.calendar.business_time import BusinessCalendar


@dataclass(frozen=True)
class _Days:
    """Business seconds accumulated at the start of each local day of a range."""

    first: pd.Timestamp
    days: pd.DatetimeIndex
    is_open: np.ndarray
    before: np.ndarray
    length: float
    opening: float


@lru_cache(maxsize=64)
def _days(calendar: BusinessCalendar, first: pd.Timestamp, last: pd.Timestamp) -> _Days:
    days = pd.date_range(first, last, freq="D")
    is_open = np.array([calendar.is_business_day(d.date()) for d in days], dtype="float64")
    length = calendar.business_day_length.total_seconds()
    start = calendar.day_start
    return _Days(first=first, days=days, is_open=is_open, length=length,
                 before=np.concatenate([[0.0], np.cumsum(is_open * length)[:-1]]),
                 opening=start.hour * 3600 + start.minute * 60 + start.second
                 + start.microsecond / 1e6)


def _wall(calendar: BusinessCalendar, stamps: pd.Series) -> pd.Series:
    return stamps.dt.tz_convert(calendar.timezone).dt.tz_localize(None)


def _clock(table: _Days, wall: pd.Series) -> np.ndarray:
    day = wall.dt.normalize()
    index = (day - table.first).dt.days.to_numpy()
    elapsed = np.clip((wall - day).dt.total_seconds().to_numpy() - table.opening, 0.0,
                      table.length)
    return table.before[index] + elapsed * table.is_open[index]  # type: ignore[no-any-return]


def business_clock(calendar: BusinessCalendar, stamps: pd.Series) -> pd.Series:
    """Business seconds from a common origin to each instant (NaN where missing), vectorised.

    The difference of two readings is the business time between them, as
    calendar.business_time_between counts it: each business day contributes the part of its
    wall-clock window [day_start, day_end) that has elapsed.
    """
    out = pd.Series(np.nan, index=stamps.index, dtype="float64")
    valid = stamps.notna()
    if not valid.any():
        return out
    wall = _wall(calendar, stamps[valid])
    day = wall.dt.normalize()
    out[valid] = _clock(_days(calendar, day.min(), day.max()), wall)
    return out


def add_business_seconds(calendar: BusinessCalendar, stamps: pd.Series,
                         seconds: float) -> pd.Series:
    """stamps + seconds of business time, vectorised (calendar.add_business_time semantics:
    the earliest instant that reaches the total, so an exact fit lands on a closing time)."""
    out = pd.Series(pd.NaT, index=stamps.index, dtype="datetime64[ns, UTC]")
    valid = stamps.notna()
    if not valid.any():
        return out
    wall = _wall(calendar, stamps[valid])
    day = wall.dt.normalize()
    reach = int(seconds // max(calendar.business_day_length.total_seconds(), 1)) * 3 + 30
    table = _days(calendar, day.min(), day.max() + pd.Timedelta(days=reach))
    target = _clock(table, wall) + seconds
    ends = table.before + table.is_open * table.length  # accumulated at each day's close
    index = np.searchsorted(ends, target, side="left")
    into = target - table.before[index]
    local = (table.days[index] + pd.to_timedelta(table.opening + into, unit="s"))
    out[valid] = pd.DatetimeIndex(local).tz_localize(calendar.timezone).tz_convert("UTC")
    return out


def business_days(calendar: BusinessCalendar, start: pd.Series, end: pd.Series) -> pd.Series:
    """Business days from each start to each end (NaN where either is missing)."""
    both = business_clock(calendar, pd.concat([start, end], ignore_index=True))
    seconds = both.iloc[len(start):].to_numpy() - both.iloc[:len(start)].to_numpy()
    day = calendar.business_day_length.total_seconds()
    return pd.Series(seconds / day, index=start.index, dtype="float64")
