"""SLA clocks over the playbook's business calendar."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from db.playbook import WEEKDAYS, Calendar, Playbook, TimeUnit, get_playbook
from db.playbook.parts import ClientHours
from db.validation import parse_instant
from tasks.calendar.business_time import BusinessCalendar


@lru_cache(maxsize=8)
def _calendar(calendar_json: str) -> BusinessCalendar:
    calendar = Calendar.model_validate_json(calendar_json)
    return BusinessCalendar(
        timezone=calendar.timezone,
        workdays=frozenset(WEEKDAYS[d] for d in calendar.workdays),
        day_start=calendar.hours.start,
        day_end=calendar.hours.end,
        holiday_country=calendar.holidays.country,
        holiday_subdivision=calendar.holidays.subdivision,
        closed_dates=frozenset(calendar.closed_dates),
        holiday_store=_holiday_store,
    )


def _holiday_store() -> Path:
    from db.settings import get_settings

    return get_settings().home / "cache"


def calendar_for(playbook: Playbook) -> BusinessCalendar:
    """The business calendar the playbook describes (cached; playbooks are immutable)."""
    return _calendar(playbook.calendar.model_dump_json())


def warm_calendar(playbook: Playbook, around: dt.datetime) -> None:
    """Build the calendar for the years around `around` before a transaction needs it, so a
    write holds the database lock for milliseconds, not for the holidays package's imports."""
    calendar_for(playbook).prepare(range(around.year - 1, around.year + 2))


def business_hours_per_day(playbook: Playbook) -> float:
    """Hours in one business day (the calendar's opening hours)."""
    return calendar_for(playbook).business_day_length / dt.timedelta(hours=1)


def in_business_days(playbook: Playbook, amount: float, unit: TimeUnit) -> float:
    """An SLA amount in business days, the unit stage aging is reported in (clock hours are
    counted as calendar days)."""
    if unit is TimeUnit.BUSINESS_DAYS:
        return amount
    if unit is TimeUnit.BUSINESS_HOURS:
        return amount / business_hours_per_day(playbook)
    return amount / 24


def due_after(playbook: Playbook, start: dt.datetime, amount: float, unit: TimeUnit) -> dt.datetime:
    """When something started at `start` is due, counting in the SLA's own unit."""
    if unit is TimeUnit.CLOCK_HOURS:
        return (start + dt.timedelta(hours=amount)).astimezone(dt.UTC)
    calendar = calendar_for(playbook)
    if unit is TimeUnit.BUSINESS_DAYS:
        whole = int(amount)
        due = calendar.add_business_days(start, whole)
        rest = amount - whole
        if rest:
            day = dt.datetime.combine(dt.date(2000, 1, 1), calendar.day_end) - dt.datetime.combine(
                dt.date(2000, 1, 1), calendar.day_start
            )
            due = calendar.add_business_time(due, day * rest)
        return due
    return calendar.add_business_time(start, dt.timedelta(hours=amount))


def business_minutes_late(playbook: Playbook, due: dt.datetime, done: dt.datetime) -> int:
    """Business minutes between the due time and when it happened (0 when on time)."""
    if done <= due:
        return 0
    late = calendar_for(playbook).business_time_between(due, done)
    return int(late.total_seconds() // 60)


def next_send_window(playbook: Playbook, at: dt.datetime,
                     client_tz: str | None = None) -> dt.datetime:
    """The first instant at or after `at` when a client message may go out: the business's
    hours, and also the client's own (calendar.client_hours in `client_tz`) when their timezone
    is known; the client's hours alone when the two never overlap in the week from `at`."""
    business = calendar_for(playbook)
    if client_tz is None:
        return business.next_open(at)
    client = _client_calendar(playbook.calendar.client_hours.model_dump_json(), client_tz)
    week = _first_open_in_both(_weekly_hours(playbook.calendar.model_dump_json()), client, at,
                               at + _A_WEEK)
    if week is None:
        return client.next_open(at)  # the hours never overlap: the client's hours win
    return _first_open_in_both(business, client, at, at + _SEARCH) or client.next_open(at)


def in_send_window(playbook: Playbook, at: dt.datetime, client_tz: str | None = None) -> bool:
    """True if a client message may go out at `at` (see next_send_window)."""
    return next_send_window(playbook, at, client_tz) == at


_A_WEEK = dt.timedelta(days=8)  # a week, whatever instant of a day it starts at
_SEARCH = dt.timedelta(days=400)  # both calendars closed this long: a closure, not a pattern


def _first_open_in_both(a: BusinessCalendar, b: BusinessCalendar, at: dt.datetime,
                        until: dt.datetime) -> dt.datetime | None:
    """The first instant in [at, until) when both calendars are open, if any."""
    t = at.astimezone(dt.UTC)
    while t < until:
        t = a.next_open(t)
        if b.is_open(t):
            return t
        t = b.next_open(t)  # later than t: b was closed at t
        if a.is_open(t):
            return t
    return None


@lru_cache(maxsize=64)
def _client_calendar(hours_json: str, client_tz: str) -> BusinessCalendar:
    """The client's working hours in their own zone (no holidays: their country is unknown)."""
    hours = ClientHours.model_validate_json(hours_json)
    return BusinessCalendar(timezone=client_tz,
                            workdays=frozenset(WEEKDAYS[d] for d in hours.workdays),
                            day_start=hours.start, day_end=hours.end)


@lru_cache(maxsize=8)
def _weekly_hours(calendar_json: str) -> BusinessCalendar:
    """The business's weekly hours without holidays or closed dates: whether the two calendars
    overlap is a property of the weeks, not of a closure that happens to fall in one."""
    calendar = Calendar.model_validate_json(calendar_json)
    return BusinessCalendar(timezone=calendar.timezone,
                            workdays=frozenset(WEEKDAYS[d] for d in calendar.workdays),
                            day_start=calendar.hours.start, day_end=calendar.hours.end)


def parse_as_of(value: str | None, field: str = "as_of") -> dt.datetime:
    """An instant a person typed or a flow was given: ISO 8601, read in the playbook's timezone
    when it has no offset; now when empty. `field` names it in the error."""
    return parse_instant(value, get_playbook().calendar.tz, field)


def kickoff_window_end(playbook: Playbook, kickoff_by: dt.date) -> dt.datetime:
    """The end of the committed kickoff date: midnight after it, in the playbook's timezone."""
    return dt.datetime.combine(kickoff_by + dt.timedelta(days=1), dt.time(),
                               tzinfo=playbook.calendar.tz).astimezone(dt.UTC)


def clock_start(start: str, *, closed_at: dt.datetime, stage: str, entered_at: dt.datetime,
                artifacts: Mapping[str, dt.datetime]) -> dt.datetime | None:
    """When a clock whose playbook `from` is `start` began, for a client now in `stage`: the
    close, this stage's entry, a named stage's entry, or an artifact's recording. None when that
    has not happened or is not known here (a stage the client is not in, an artifact not yet
    recorded); the playbook loader refuses any other value."""
    if start == "closed_at":
        return closed_at
    if start == "stage_entered":
        return entered_at
    if start.startswith("stage_entered:"):
        return entered_at if start.removeprefix("stage_entered:") == stage else None
    return artifacts.get(start)
