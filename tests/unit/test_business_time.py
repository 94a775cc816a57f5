"""Tests for tasks.business_time: a brute-force minute oracle plus explicit worked examples."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import json
import sys
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

# The project is not always importable from the test run (no conftest/pythonpath setting and the
# editable install may predate the tasks package), so fall back to the repository root.
if importlib.util.find_spec("tasks") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks.calendar.business_time import BusinessCalendar  # noqa: E402

UTC = dt.UTC
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CALENDARS: dict[str, BusinessCalendar] = {
    "ny": BusinessCalendar(
        timezone="America/New_York",
        workdays=frozenset({1, 2, 3, 4, 5}),
        day_start=dt.time(9, 0),
        day_end=dt.time(17, 0),
        holiday_country="US",
        holiday_subdivision=None,
        closed_dates=frozenset(),
    ),
    "berlin": BusinessCalendar(
        timezone="Europe/Berlin",
        workdays=frozenset({1, 2, 3, 4, 5}),
        day_start=dt.time(8, 30),
        day_end=dt.time(17, 15),
        holiday_country="DE",
        holiday_subdivision="BE",
        closed_dates=frozenset({dt.date(2026, 3, 31), dt.date(2026, 10, 27)}),
    ),
    # Windows that contain the DST gap/overlap, ending inside the spring-forward gap.
    "ny_night": BusinessCalendar(
        timezone="America/New_York",
        workdays=frozenset(range(1, 8)),
        day_start=dt.time(0, 15),
        day_end=dt.time(2, 30),
        holiday_country=None,
        holiday_subdivision=None,
        closed_dates=frozenset(),
    ),
    # A window starting inside the spring-forward gap.
    "berlin_early": BusinessCalendar(
        timezone="Europe/Berlin",
        workdays=frozenset(range(1, 8)),
        day_start=dt.time(2, 30),
        day_end=dt.time(6, 0),
        holiday_country=None,
        holiday_subdivision=None,
        closed_dates=frozenset({dt.date(2026, 3, 30)}),
    ),
}

# Local-date spans (inclusive start, exclusive end) covering DST changes and key holidays.
PERIODS: dict[str, list[tuple[dt.date, dt.date]]] = {
    # March DST (03-08), July 4th (observed Fri 07-03), November DST (11-01) + Thanksgiving.
    "ny": [
        (dt.date(2026, 2, 23), dt.date(2026, 3, 23)),
        (dt.date(2026, 6, 22), dt.date(2026, 7, 13)),
        (dt.date(2026, 10, 19), dt.date(2026, 12, 7)),
    ],
    # March DST (03-29), Easter + closed 03-31; October DST (10-25) + closed 10-27.
    "berlin": [
        (dt.date(2026, 3, 16), dt.date(2026, 4, 13)),
        (dt.date(2026, 10, 12), dt.date(2026, 11, 9)),
    ],
    "ny_night": [
        (dt.date(2026, 3, 1), dt.date(2026, 3, 15)),
        (dt.date(2026, 10, 25), dt.date(2026, 11, 8)),
    ],
    "berlin_early": [
        (dt.date(2026, 3, 22), dt.date(2026, 4, 5)),
        (dt.date(2026, 10, 18), dt.date(2026, 11, 1)),
    ],
}
CASES = [(name, i) for name, periods in PERIODS.items() for i in range(len(periods))]


@dataclass(frozen=True)
class MinuteOracle:
    """Brute-force open/closed flags for every UTC minute of a period."""

    origin: dt.datetime  # UTC instant of minute index 0
    is_open: list[bool]
    prefix: list[int]  # prefix[i] = open minutes among indices < i
    open_idx: list[int]

    def at(self, i: int) -> dt.datetime:
        """UTC instant of minute index ``i``."""
        return self.origin + i * MINUTE

    @property
    def n(self) -> int:
        """Number of minutes covered."""
        return len(self.is_open)


def wall_clock_open(cal: BusinessCalendar, hol: holidays.HolidayBase, at: dt.datetime) -> bool:
    """Independent definition: local wall time within hours on a non-holiday workday."""
    local = at.astimezone(ZoneInfo(cal.timezone))
    d = local.date()
    return (
        d.isoweekday() in cal.workdays
        and d not in hol
        and d not in cal.closed_dates
        and cal.day_start <= local.time() < cal.day_end
    )


@functools.cache
def oracle(name: str, period: int) -> MinuteOracle:
    """Minute-by-minute oracle for one calendar period (built once per session)."""
    cal = CALENDARS[name]
    first, last = PERIODS[name][period]
    tz = ZoneInfo(cal.timezone)
    hol: holidays.HolidayBase = (
        holidays.country_holidays(
            cal.holiday_country, subdiv=cal.holiday_subdivision, years=range(2025, 2028)
        )
        if cal.holiday_country
        else holidays.HolidayBase()
    )
    origin = dt.datetime.combine(first, dt.time(), tzinfo=tz).astimezone(UTC)
    end = dt.datetime.combine(last, dt.time(), tzinfo=tz).astimezone(UTC)
    n = (end - origin) // MINUTE
    flags = [wall_clock_open(cal, hol, origin + i * MINUTE) for i in range(n)]
    prefix = [0]
    for f in flags:
        prefix.append(prefix[-1] + f)
    return MinuteOracle(origin, flags, prefix, [i for i, f in enumerate(flags) if f])


case_st = st.sampled_from(CASES)


# ------------------------------------------------------------------------- oracle comparisons


@pytest.mark.parametrize(("name", "period"), CASES)
def test_is_open_matches_oracle_every_minute(name: str, period: int) -> None:
    cal = CALENDARS[name]
    orc = oracle(name, period)
    mismatches = [orc.at(i) for i in range(orc.n) if cal.is_open(orc.at(i)) != orc.is_open[i]]
    assert mismatches == []


@SETTINGS
@given(case=case_st, data=st.data())
def test_between_matches_oracle(case: tuple[str, int], data: st.DataObject) -> None:
    cal, orc = CALENDARS[case[0]], oracle(*case)
    i = data.draw(st.integers(0, orc.n), label="i")
    j = data.draw(st.integers(0, orc.n), label="j")
    expected = (orc.prefix[j] - orc.prefix[i]) * MINUTE
    assert cal.business_time_between(orc.at(i), orc.at(j)) == expected
    # Input timezone must not matter, only the instant.
    assert cal.business_time_between(orc.at(i).astimezone(BERLIN), orc.at(j)) == expected


@SETTINGS
@given(case=case_st, data=st.data())
def test_add_business_time_matches_oracle(case: tuple[str, int], data: st.DataObject) -> None:
    cal, orc = CALENDARS[case[0]], oracle(*case)
    s = data.draw(st.integers(0, orc.n - 1), label="start")
    k = data.draw(st.integers(0, 3 * 24 * 60), label="minutes")
    j = bisect_left(orc.open_idx, s)
    # k-th open minute at/after s ends at the earliest instant with k minutes accrued.
    assume(j + max(k, 1) - 1 < len(orc.open_idx))
    expected = orc.at(orc.open_idx[j]) if k == 0 else orc.at(orc.open_idx[j + k - 1] + 1)
    result = cal.add_business_time(orc.at(s), k * MINUTE)
    assert result == expected
    assert result.tzinfo is UTC


@SETTINGS
@given(case=case_st, data=st.data())
def test_subtract_business_time_matches_oracle(case: tuple[str, int], data: st.DataObject) -> None:
    cal, orc = CALENDARS[case[0]], oracle(*case)
    s = data.draw(st.integers(0, orc.n), label="start")
    k = data.draw(st.integers(1, 3 * 24 * 60), label="minutes")
    j = bisect_left(orc.open_idx, s)
    assume(j - k >= 0)
    # Latest instant with k minutes before s is the start of the k-th open minute counting back.
    assert cal.add_business_time(orc.at(s), -k * MINUTE) == orc.at(orc.open_idx[j - k])


@SETTINGS
@given(case=case_st, data=st.data())
def test_next_open_matches_oracle(case: tuple[str, int], data: st.DataObject) -> None:
    cal, orc = CALENDARS[case[0]], oracle(*case)
    s = data.draw(st.integers(0, orc.n - 1), label="start")
    j = bisect_left(orc.open_idx, s)
    assume(j < len(orc.open_idx))
    result = cal.next_open(orc.at(s))
    assert result == orc.at(orc.open_idx[j])
    assert result.tzinfo is UTC
    assert cal.is_open(result)


# --------------------------------------------------------------- algebraic properties (any µs)

instants = st.datetimes(
    min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2029, 12, 31), timezones=st.just(UTC)
)
deltas = st.timedeltas(min_value=-dt.timedelta(days=400), max_value=dt.timedelta(days=400))
cal_st = st.sampled_from(sorted(CALENDARS))


@SETTINGS
@given(name=cal_st, start=instants, delta=deltas)
def test_add_then_between_round_trips(name: str, start: dt.datetime, delta: dt.timedelta) -> None:
    cal = CALENDARS[name]
    end = cal.add_business_time(start, delta)
    if delta > dt.timedelta(0):
        assert end > start
        assert cal.business_time_between(start, end) == delta
        # Earliest: any instant before the result has accrued strictly less.
        assert cal.business_time_between(start, end - dt.timedelta(microseconds=1)) < delta
    elif delta < dt.timedelta(0):
        assert end < start
        assert cal.business_time_between(end, start) == -delta
        # Latest: any later instant has strictly less business time up to start.
        assert cal.business_time_between(end + dt.timedelta(microseconds=1), start) < -delta
    else:
        assert end == cal.next_open(start)


@SETTINGS
@given(name=cal_st, a=instants, b=instants, c=instants)
def test_between_is_additive_and_antisymmetric(
    name: str, a: dt.datetime, b: dt.datetime, c: dt.datetime
) -> None:
    cal = CALENDARS[name]
    ab, bc, ac = (
        cal.business_time_between(a, b),
        cal.business_time_between(b, c),
        cal.business_time_between(a, c),
    )
    assert ab + bc == ac
    assert cal.business_time_between(b, a) == -ab
    assert abs(ab) <= abs(b - a)


@SETTINGS
@given(name=cal_st, start=instants, days=st.integers(-300, 300))
def test_add_business_days_is_scaled_business_time(
    name: str, start: dt.datetime, days: int
) -> None:
    cal = CALENDARS[name]
    expected = cal.add_business_time(start, days * cal.business_day_length)
    assert cal.add_business_days(start, days) == expected


# ------------------------------------------------------------------------- explicit examples


def ny(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> dt.datetime:
    """New York wall time helper."""
    return dt.datetime(year, month, day, hour, minute, second, us, tzinfo=NY)


def test_holiday_facts_assumed_by_examples() -> None:
    us = holidays.country_holidays("US", years=2026)
    assert dt.date(2026, 11, 26) in us  # Thanksgiving
    assert dt.date(2026, 11, 27) not in us  # day after Thanksgiving is not a US holiday
    assert dt.date(2026, 7, 3) in us  # July 4th falls on Saturday, observed Friday
    cal = CALENDARS["ny"]
    assert not cal.is_business_day(dt.date(2026, 11, 26))
    assert cal.is_business_day(dt.date(2026, 11, 27))
    assert not cal.is_business_day(dt.date(2026, 7, 3))
    assert not cal.is_business_day(dt.date(2026, 11, 28))  # Saturday
    assert not CALENDARS["berlin"].is_business_day(dt.date(2026, 3, 31))  # closed date
    assert not CALENDARS["berlin"].is_business_day(dt.date(2026, 4, 3))  # Good Friday


def test_friday_after_thanksgiving_plus_four_hours() -> None:
    # Fri 16:00 -> 1h until close, then 3h on Monday 2026-11-30.
    result = CALENDARS["ny"].add_business_time(ny(2026, 11, 27, 16), 4 * HOUR)
    assert result == ny(2026, 11, 30, 12)
    assert result.tzinfo is UTC


def test_wednesday_before_thanksgiving_plus_four_hours() -> None:
    result = CALENDARS["ny"].add_business_time(ny(2026, 11, 25, 15), 4 * HOUR)
    assert result == ny(2026, 11, 27, 11)


def test_across_november_dst_change() -> None:
    cal = CALENDARS["ny"]
    # 2026-11-01 (Sunday) clocks fall back; Monday opens at 09:00 EST = 14:00 UTC.
    result = cal.add_business_time(ny(2026, 10, 30, 16), 4 * HOUR)
    assert result == ny(2026, 11, 2, 12)
    assert result == dt.datetime(2026, 11, 2, 17, tzinfo=UTC)
    assert cal.business_time_between(ny(2026, 10, 30, 16), ny(2026, 11, 2, 12)) == 4 * HOUR
    assert cal.next_open(ny(2026, 10, 31, 12)) == dt.datetime(2026, 11, 2, 14, tzinfo=UTC)


def test_dst_day_lengths_follow_wall_clock() -> None:
    every_day = BusinessCalendar(
        timezone="America/New_York",
        workdays=frozenset(range(1, 8)),
        day_start=dt.time(9),
        day_end=dt.time(17),
        holiday_country=None,
        holiday_subdivision=None,
        closed_dates=frozenset(),
    )
    for day in (dt.date(2026, 3, 8), dt.date(2026, 11, 1)):
        start = dt.datetime.combine(day, dt.time(), tzinfo=NY)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=NY)
        assert every_day.business_time_between(start, end) == 8 * HOUR
    night = CALENDARS["ny_night"]  # 00:15-02:30 contains the gap / the repeated hour
    assert night.business_time_between(ny(2026, 3, 8, 0), ny(2026, 3, 8, 12)) == dt.timedelta(
        hours=1, minutes=45
    )
    assert night.business_time_between(ny(2026, 11, 1, 0), ny(2026, 11, 1, 12)) == dt.timedelta(
        hours=3, minutes=15
    )
    assert night.business_time_between(ny(2026, 11, 2, 0), ny(2026, 11, 2, 12)) == dt.timedelta(
        hours=2, minutes=15
    )
    early = CALENDARS["berlin_early"]  # 02:30-06:00: start in the gap / in the repeated hour
    spring = dt.datetime(2026, 3, 29, tzinfo=BERLIN), dt.datetime(2026, 3, 29, 12, tzinfo=BERLIN)
    assert early.business_time_between(*spring) == 3 * HOUR
    assert early.next_open(spring[0]) == dt.datetime(2026, 3, 29, 1, tzinfo=UTC)  # 03:00 CEST
    autumn = dt.datetime(2026, 10, 25, tzinfo=BERLIN), dt.datetime(2026, 10, 25, 12, tzinfo=BERLIN)
    # 02:30-03:00 CEST, closed during the repeated 02:00-02:30 CET, then 02:30-06:00 CET.
    assert early.business_time_between(*autumn) == 4 * HOUR
    assert early.is_open(dt.datetime(2026, 10, 25, 0, 45, tzinfo=UTC))
    assert not early.is_open(dt.datetime(2026, 10, 25, 1, 15, tzinfo=UTC))
    assert early.is_open(dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC))


def test_zero_delta_and_next_open() -> None:
    cal = CALENDARS["ny"]
    inside = ny(2026, 11, 25, 10, 30, 15, 123)
    assert cal.add_business_time(inside, dt.timedelta(0)) == inside
    assert cal.next_open(inside) == inside
    assert cal.next_open(inside).tzinfo is UTC
    # Outside hours (Thanksgiving) -> next opening, Friday 09:00.
    assert cal.add_business_time(ny(2026, 11, 26, 10), dt.timedelta(0)) == ny(2026, 11, 27, 9)
    # Closing instant is closed (half-open intervals).
    assert not cal.is_open(ny(2026, 11, 25, 17))
    assert cal.is_open(ny(2026, 11, 25, 9))


def test_exact_fit_boundaries() -> None:
    cal = CALENDARS["ny"]
    # Earliest instant for positive deltas: a full day from opening ends at the close.
    assert cal.add_business_time(ny(2026, 11, 30, 9), 8 * HOUR) == ny(2026, 11, 30, 17)
    assert cal.add_business_days(ny(2026, 11, 30, 9), 1) == ny(2026, 11, 30, 17)
    # Latest instant for negative deltas: a full day back from the close is the opening.
    assert cal.add_business_time(ny(2026, 11, 30, 17), -8 * HOUR) == ny(2026, 11, 30, 9)
    assert cal.add_business_time(ny(2026, 11, 30, 10), -HOUR) == ny(2026, 11, 30, 9)
    # Negative from outside hours counts back from the previous close (skipping Thanksgiving).
    assert cal.add_business_time(ny(2026, 11, 26, 12), -2 * HOUR) == ny(2026, 11, 25, 15)


def test_add_business_days_examples() -> None:
    cal = CALENDARS["ny"]
    assert cal.add_business_days(ny(2026, 11, 25, 10), 1) == ny(2026, 11, 27, 10)
    assert cal.add_business_days(ny(2026, 11, 25, 10), 2) == ny(2026, 11, 30, 10)
    assert cal.add_business_days(ny(2026, 11, 27, 10), -1) == ny(2026, 11, 25, 10)
    # From a closed instant counting starts at the next opening.
    assert cal.add_business_days(ny(2026, 11, 27, 18), 1) == ny(2026, 11, 30, 17)


def test_microsecond_exactness() -> None:
    cal = CALENDARS["berlin"]
    start = dt.datetime(2026, 10, 23, 17, 14, 59, 999_999, tzinfo=BERLIN)
    # 1µs left on Friday, closed weekend + DST change + closed Tuesday 10-27.
    result = cal.add_business_time(start, dt.timedelta(microseconds=2))
    assert result == dt.datetime(2026, 10, 26, 8, 30, 0, 1, tzinfo=BERLIN)


def test_long_spans_and_year_boundaries() -> None:
    cal = CALENDARS["ny"]
    a, b = ny(2025, 12, 31, 16), ny(2026, 1, 2, 10)  # New Year's Day closed
    assert cal.business_time_between(a, b) == 2 * HOUR
    assert cal.add_business_time(a, 2 * HOUR) == b
    ten_years = cal.business_time_between(ny(2020, 1, 1), ny(2030, 1, 1))
    assert cal.add_business_time(ny(2020, 1, 1), ten_years) == ny(2029, 12, 31, 17)


def test_search_is_capped() -> None:
    mondays = frozenset(dt.date(2026, 1, 5) + dt.timedelta(weeks=w) for w in range(52 * 8))
    never = BusinessCalendar(
        timezone="UTC",
        workdays=frozenset({1}),
        day_start=dt.time(9),
        day_end=dt.time(17),
        holiday_country=None,
        holiday_subdivision=None,
        closed_dates=mondays,
    )
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="no business time"):
        never.next_open(start)
    with pytest.raises(ValueError, match="no business time"):
        never.add_business_time(start, HOUR)
    with pytest.raises(ValueError, match="no business time"):
        CALENDARS["ny"].next_open(dt.datetime(9999, 12, 31, tzinfo=UTC))


def test_calendar_is_hashable_and_normalised() -> None:
    a = BusinessCalendar(
        timezone="Europe/Berlin",
        workdays={1, 2, 3},  # type: ignore[arg-type]
        closed_dates=[dt.date(2026, 1, 2)],  # type: ignore[arg-type]
        holiday_country="DE",
    )
    a.is_open(dt.datetime(2026, 1, 5, 10, tzinfo=UTC))  # populate caches
    b = BusinessCalendar(
        timezone="Europe/Berlin",
        workdays=frozenset({1, 2, 3}),
        closed_dates=frozenset({dt.date(2026, 1, 2)}),
        holiday_country="DE",
    )
    assert a == b
    assert hash(a) == hash(b)
    assert isinstance(a.workdays, frozenset)
    assert isinstance(a.closed_dates, frozenset)
    # Defaults: Mon-Fri 09:00-17:00, no holidays.
    plain = BusinessCalendar(timezone="UTC")
    assert plain.business_day_length == 8 * HOUR
    assert plain.holiday_country is None


# ------------------------------------------------------------------------------ validation


def _cal(**overrides: object) -> BusinessCalendar:
    """Build a New York calendar with some fields overridden."""
    kwargs: dict[str, object] = dict(
        timezone="America/New_York",
        workdays=frozenset({1, 2, 3, 4, 5}),
        day_start=dt.time(9),
        day_end=dt.time(17),
        holiday_country="US",
        holiday_subdivision=None,
        closed_dates=frozenset(),
    )
    kwargs.update(overrides)
    return BusinessCalendar(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["Mars/Olympus_Mons", "", "../etc/passwd", "America/New York"])
def test_invalid_timezone(bad: str) -> None:
    with pytest.raises(ValueError, match="timezone") as info:
        _cal(timezone=bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(("start", "end"), [(dt.time(17), dt.time(9)), (dt.time(9), dt.time(9))])
def test_day_end_must_follow_day_start(start: dt.time, end: dt.time) -> None:
    with pytest.raises(ValueError, match="day_end") as info:
        _cal(day_start=start, day_end=end)
    assert repr(end) in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("workdays", frozenset({0, 1}), "0"),
        ("workdays", frozenset({8}), "8"),
        ("workdays", frozenset(), "frozenset()"),
        ("holiday_country", "XX", "'XX'"),
        ("holiday_subdivision", "ZZ", "'ZZ'"),
        ("day_start", dt.time(9, tzinfo=UTC), "tzinfo"),
        ("closed_dates", frozenset({dt.datetime(2026, 1, 1)}), "datetime.datetime(2026, 1, 1"),
    ],
)
def test_invalid_fields(field: str, value: object, shown: str) -> None:
    with pytest.raises(ValueError) as info:
        _cal(**{field: value})
    assert shown in str(info.value)


def test_subdivision_without_country() -> None:
    with pytest.raises(ValueError, match="'CA'"):
        _cal(holiday_country=None, holiday_subdivision="CA")


def test_naive_datetimes_rejected() -> None:
    cal = CALENDARS["ny"]
    naive = dt.datetime(2026, 11, 25, 10)
    aware = ny(2026, 11, 25, 10)
    calls = [
        lambda: cal.is_open(naive),
        lambda: cal.next_open(naive),
        lambda: cal.add_business_time(naive, HOUR),
        lambda: cal.add_business_days(naive, 1),
        lambda: cal.business_time_between(naive, aware),
        lambda: cal.business_time_between(aware, naive),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="timezone-aware") as info:
            call()
        assert repr(naive) in str(info.value)
    with pytest.raises(ValueError, match="timedelta"):
        cal.add_business_time(aware, 60)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="datetime.date"):
        cal.is_business_day(aware)


def test_sla_amounts_in_business_days_follow_the_playbooks_opening_hours() -> None:
    from db.playbook import TimeUnit, get_playbook
    from tasks.calendar.clock import in_business_days

    playbook = get_playbook()  # open 09:00-17:00
    assert in_business_days(playbook, 3, TimeUnit.BUSINESS_DAYS) == 3
    assert in_business_days(playbook, 4, TimeUnit.BUSINESS_HOURS) == 0.5
    assert in_business_days(playbook, 36, TimeUnit.CLOCK_HOURS) == 1.5
    longer = playbook.model_copy(update={"calendar": playbook.calendar.model_copy(update={
        "hours": playbook.calendar.hours.model_copy(update={"end": dt.time(19, 0)})})})
    assert in_business_days(longer, 5, TimeUnit.BUSINESS_HOURS) == 0.5


def test_a_stored_year_of_holidays_is_the_computed_one(tmp_path: Path) -> None:
    """The holidays kept on disk are the package's, read back whole; a damaged file is
    computed again (and rewritten)."""
    def store() -> Path:
        return tmp_path

    plain = BusinessCalendar("America/New_York", holiday_country="US")
    first = BusinessCalendar("America/New_York", holiday_country="US", holiday_store=store)
    assert first.is_business_day(dt.date(2026, 11, 26)) is False  # Thanksgiving, computed
    kept = sorted(tmp_path.glob("holidays-*-US--2026.json"))
    assert len(kept) == 1
    again = BusinessCalendar("America/New_York", holiday_country="US", holiday_store=store)
    assert again._holidays(2026) == plain._holidays(2026) == first._holidays(2026)
    kept[0].write_text("[\"2026-13-")
    damaged = BusinessCalendar("America/New_York", holiday_country="US", holiday_store=store)
    assert damaged._holidays(2026) == plain._holidays(2026)
    assert json.loads(kept[0].read_text()) == sorted(d.isoformat() for d in plain._holidays(2026))
