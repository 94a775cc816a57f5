"""The vectorised business clock against the exact calendar it twins (tasks/calendar)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tasks.calendar.business_time import BusinessCalendar
from tasks.calendar.vectorised import add_business_seconds, business_days


def test_vectorised_business_days_match_the_exact_calendar() -> None:
    """The pandas business clock agrees with BusinessCalendar.business_time_between, including
    across DST changes, weekends, Thanksgiving and closed dates."""
    calendar = BusinessCalendar(timezone="America/New_York", holiday_country="US",
                                closed_dates=frozenset({dt.date(2026, 12, 24)}))
    rng = np.random.default_rng(7)
    base = pd.Timestamp("2026-02-20", tz="UTC")
    starts = base + pd.to_timedelta(rng.integers(0, 330 * 24 * 60, 400), unit="min")
    ends = starts + pd.to_timedelta(rng.integers(0, 40 * 24 * 60, 400), unit="min")
    start, end = pd.Series(starts), pd.Series(ends)
    start.iloc[3] = pd.NaT
    got = business_days(calendar, start, end)
    day = calendar.business_day_length.total_seconds()
    for i in range(len(start)):
        if pd.isna(start.iloc[i]):
            assert np.isnan(got.iloc[i])
            continue
        exact = calendar.business_time_between(start.iloc[i].to_pydatetime(),
                                                end.iloc[i].to_pydatetime()).total_seconds()
        assert got.iloc[i] == pytest.approx(exact / day, abs=1e-6), (start.iloc[i], end.iloc[i])


@pytest.mark.parametrize("hours", [0.5, 4, 8, 24, 80])
def test_vectorised_business_add_matches_the_exact_calendar(hours: float) -> None:
    calendar = BusinessCalendar(timezone="America/New_York", holiday_country="US",
                                closed_dates=frozenset({dt.date(2026, 12, 24)}))
    rng = np.random.default_rng(int(hours * 10))
    base = pd.Timestamp("2026-02-20", tz="UTC")
    stamps = pd.Series(base + pd.to_timedelta(rng.integers(0, 330 * 24 * 60, 300), unit="min"))
    got = add_business_seconds(calendar, stamps, hours * 3600)
    for i, start in enumerate(stamps):
        exact = calendar.add_business_time(start.to_pydatetime(), dt.timedelta(hours=hours))
        assert got.iloc[i] == pd.Timestamp(exact), (start, hours)
