"""Exact business-hours arithmetic in a calendar's local wall time, DST- and holiday-aware.

Model: an instant is "open" iff its local wall-clock date (in the calendar's timezone) is a
business day and its local wall time is in ``[day_start, day_end)``. Per business day that set
is converted once to half-open UTC intervals (usually one; two when a bound falls inside a
repeated fall-back hour). Everything else is a cumulative "business clock" over those
intervals, kept per local calendar year as integer microseconds, so every query is a few
bisects (no iteration over minutes or days once a year's table is built) and results are exact
to the microsecond.

Consequences on DST-change dates: 09:00-17:00 is still 8 real hours; a window containing the
spring-forward gap is 1 hour shorter and one containing the repeated hour 1 hour longer; a
bound inside the gap effectively moves to the transition instant. Assumes at most one UTC
offset change within a single day's window (true for all real-world zones).
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tasks.calendar.public_holidays import public_holidays, read_kept, store_path

__all__ = ["BusinessCalendar"]

_UTC = dt.UTC
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_US = dt.timedelta(microseconds=1)
# Years with no business time at all before a search gives up (e.g. every day closed).
_MAX_EMPTY_YEARS = 5
# Tables are never built at the datetime range edges so UTC conversions cannot overflow.
_MIN_TABLE_YEAR = dt.MINYEAR + 1
_MAX_TABLE_YEAR = dt.MAXYEAR - 1


class _YearTable(NamedTuple):
    """Business intervals of one local calendar year as UTC epoch microseconds."""

    starts: list[int]
    ends: list[int]
    cum: list[int]  # cum[i] = business microseconds in intervals before i; len == n + 1
    total: int

    def before(self, t: int) -> int:
        """Business microseconds of this year's intervals that lie before instant ``t``."""
        i = bisect_right(self.starts, t) - 1
        if i < 0:
            return 0
        return self.cum[i] + min(t, self.ends[i]) - self.starts[i]


_EMPTY_TABLE = _YearTable([], [], [0], 0)


def _to_us(at: dt.datetime) -> int:
    """Aware datetime -> exact integer microseconds since the Unix epoch."""
    return (at - _EPOCH) // _US


def _from_us(t: int) -> dt.datetime:
    """Integer epoch microseconds -> aware UTC datetime."""
    return _EPOCH + dt.timedelta(microseconds=t)


def _require_aware(name: str, value: object) -> dt.datetime:
    """Return ``value`` if it is an aware datetime, else raise ValueError naming it."""
    if not isinstance(value, dt.datetime):
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value


@dataclass(frozen=True)
class BusinessCalendar:
    """Working hours in a timezone, minus weekends, public holidays and ad-hoc closed dates."""

    timezone: str
    workdays: frozenset[int] = frozenset({1, 2, 3, 4, 5})
    day_start: dt.time = dt.time(9, 0)
    day_end: dt.time = dt.time(17, 0)
    holiday_country: str | None = None
    holiday_subdivision: str | None = None
    closed_dates: frozenset[dt.date] = frozenset()
    # Where each year's public holidays are kept once computed (the holidays package costs a
    # quarter of a second to import and compute a year, in every process); None: not kept.
    holiday_store: Callable[[], Path] | None = field(default=None, repr=False, compare=False)

    # Caches are excluded from eq/hash/repr so two equal calendars stay equal and hashable.
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)
    _holiday_cache: dict[int, frozenset[dt.date]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _table_cache: dict[int, _YearTable] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        """Validate every field and normalise collections to frozensets."""
        if not isinstance(self.timezone, str) or not self.timezone:
            raise ValueError(f"timezone must be an IANA timezone name, got {self.timezone!r}")
        try:
            tz = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as exc:
            raise ValueError(f"unknown IANA timezone {self.timezone!r}") from exc
        object.__setattr__(self, "_tz", tz)

        workdays = frozenset(self.workdays)
        bad_days = sorted(repr(w) for w in workdays if isinstance(w, bool) or w not in range(1, 8))
        if bad_days:
            raise ValueError(
                f"workdays must be ISO weekday numbers 1..7, got invalid {', '.join(bad_days)}"
            )
        if not workdays:
            raise ValueError(f"workdays must not be empty, got {self.workdays!r}")
        object.__setattr__(self, "workdays", workdays)

        for name in ("day_start", "day_end"):
            value = getattr(self, name)
            # datetime is not a time subclass, but an aware time would silently mean nothing.
            if not isinstance(value, dt.time) or value.tzinfo is not None:
                raise ValueError(f"{name} must be a naive datetime.time, got {value!r}")
        if self.day_end <= self.day_start:
            raise ValueError(
                f"day_end {self.day_end!r} must be later than day_start {self.day_start!r}"
            )

        closed = frozenset(self.closed_dates)
        for d in closed:
            # A datetime would never match date lookups, so reject it rather than ignore it.
            if not isinstance(d, dt.date) or isinstance(d, dt.datetime):
                raise ValueError(f"closed_dates must contain datetime.date values, got {d!r}")
        object.__setattr__(self, "closed_dates", closed)

        if self.holiday_country is None:
            if self.holiday_subdivision is not None:
                raise ValueError(
                    f"holiday_subdivision {self.holiday_subdivision!r} needs a holiday_country"
                )
        elif self._stored(dt.date.today().year) is None:  # a stored year proves it valid
            import holidays

            try:
                holidays.country_holidays(
                    self.holiday_country, subdiv=self.holiday_subdivision, years=()
                )
            except (NotImplementedError, KeyError, ValueError, TypeError) as exc:
                raise ValueError(
                    f"unsupported holiday_country/holiday_subdivision "
                    f"{self.holiday_country!r}/{self.holiday_subdivision!r}: {exc}"
                ) from exc

    # ----------------------------------------------------------------------------- public API

    @property
    def business_day_length(self) -> dt.timedelta:
        """Nominal length of one business day, ``day_end - day_start`` in wall time."""
        return dt.datetime.combine(dt.date.min, self.day_end) - dt.datetime.combine(
            dt.date.min, self.day_start
        )

    def prepare(self, years: Iterable[int]) -> None:
        """Load these years' holidays and interval tables now (the holidays package imports a
        country's rules on first use: ~0.4 s), e.g. before a write transaction that needs them."""
        for year in years:
            self._table(year)

    def is_business_day(self, d: dt.date) -> bool:
        """True if ``d`` is a workday that is neither a public holiday nor a closed date."""
        if isinstance(d, dt.datetime):
            raise ValueError(f"is_business_day expects a datetime.date, got datetime {d!r}")
        if not isinstance(d, dt.date):
            raise ValueError(f"is_business_day expects a datetime.date, got {d!r}")
        return (
            d.isoweekday() in self.workdays
            and d not in self.closed_dates
            and d not in self._holidays(d.year)
        )

    def is_open(self, at: dt.datetime) -> bool:
        """True if the aware instant ``at`` lies inside a business interval."""
        at = _require_aware("at", at)
        t = _to_us(at)
        year = at.astimezone(self._tz).year
        # Neighbouring years only matter for exotic zones whose transitions cross midnight.
        for y in (year, year - 1, year + 1):
            table = self._table(y)
            i = bisect_right(table.starts, t) - 1
            if i >= 0 and t < table.ends[i]:
                return True
        return False

    def next_open(self, at: dt.datetime) -> dt.datetime:
        """``at`` (as UTC) if open, else the next opening instant in UTC."""
        at = _require_aware("at", at)
        t = _to_us(at)
        for table in self._tables_forward(at):
            i = bisect_right(table.ends, t)
            if i < len(table.ends):
                return _from_us(max(t, table.starts[i]))
        raise AssertionError("unreachable: _tables_forward raises when exhausted")

    def add_business_time(self, start: dt.datetime, delta: dt.timedelta) -> dt.datetime:
        """Instant (UTC) at which ``delta`` of business time has elapsed since ``start``."""
        # Exact fits: positive deltas return the earliest such instant (Mon 09:00 + 8h -> Mon
        # 17:00, the close); negative ones the latest (Tue 17:00 - 8h -> Tue 09:00, the opening);
        # zero returns next_open(start), so a start outside hours counts from the next opening.
        start = _require_aware("start", start)
        if not isinstance(delta, dt.timedelta):
            raise ValueError(f"delta must be a datetime.timedelta, got {delta!r}")
        remaining = delta // _US
        if remaining == 0:
            return self.next_open(start)
        t = _to_us(start)
        if remaining > 0:
            for table in self._tables_forward(start):
                available = table.total - table.before(t)
                if remaining <= available:
                    target = table.before(t) + remaining
                    # bisect_left picks the first interval reaching target -> earliest instant.
                    i = bisect_left(table.cum, target) - 1
                    return _from_us(table.starts[i] + target - table.cum[i])
                remaining -= available
        else:
            remaining = -remaining
            for table in self._tables_backward(start):
                available = table.before(t)
                if remaining <= available:
                    target = available - remaining
                    # bisect_right picks the last interval at target -> latest instant.
                    i = bisect_right(table.cum, target) - 1
                    return _from_us(table.starts[i] + target - table.cum[i])
                remaining -= available
        raise AssertionError("unreachable: table iterators raise when exhausted")

    def business_time_between(self, a: dt.datetime, b: dt.datetime) -> dt.timedelta:
        """Business time in ``[a, b)``; negative if ``b < a``."""
        a = _require_aware("a", a)
        b = _require_aware("b", b)
        ta, tb = _to_us(a), _to_us(b)
        if tb < ta:
            return -self.business_time_between(b, a)
        ya = a.astimezone(self._tz).year
        yb = b.astimezone(self._tz).year
        total = 0
        for y in range(max(ya - 1, dt.MINYEAR), min(yb + 1, dt.MAXYEAR) + 1):
            table = self._table(y)
            if ya + 2 <= y <= yb - 2:
                # Whole years strictly inside the span: no bisect needed, even with DST quirks.
                total += table.total
            else:
                total += table.before(tb) - table.before(ta)
        return dt.timedelta(microseconds=total)

    def add_business_days(self, start: dt.datetime, days: int) -> dt.datetime:
        """``add_business_time(start, days * (day_end - day_start))``; DST days count as full."""
        start = _require_aware("start", start)
        if isinstance(days, bool) or not isinstance(days, int):
            raise ValueError(f"days must be an int, got {days!r}")
        return self.add_business_time(start, days * self.business_day_length)

    # ------------------------------------------------------------------------------ internals

    def _holidays(self, year: int) -> frozenset[dt.date]:
        """Public holidays of ``year`` (cached; the holidays package is slow per lookup)."""
        cached = self._holiday_cache.get(year)
        if cached is None:
            cached = frozenset() if self.holiday_country is None else public_holidays(
                self.holiday_country, self.holiday_subdivision, year, self.holiday_store)
            self._holiday_cache[year] = cached
        return cached

    def _stored(self, year: int) -> frozenset[dt.date] | None:
        """The kept holidays of ``year``, if any (tasks/calendar/public_holidays.py)."""
        if self.holiday_country is None:
            return None
        return read_kept(store_path(self.holiday_store, self.holiday_country,
                                    self.holiday_subdivision, year))

    def _offset_us(self, t: int) -> int:
        """UTC offset of the calendar's zone at instant ``t``, in microseconds."""
        offset = _from_us(t).astimezone(self._tz).utcoffset()
        assert offset is not None  # zoneinfo always yields an offset for aware datetimes
        return offset // _US

    def _day_intervals(self, d: dt.date) -> list[tuple[int, int]]:
        """UTC intervals of instants whose local wall time on ``d`` is in business hours."""
        naive_start = dt.datetime.combine(d, self.day_start)
        naive_end = dt.datetime.combine(d, self.day_end)
        wall_start = (naive_start - _NAIVE_EPOCH) // _US
        wall_end = (naive_end - _NAIVE_EPOCH) // _US
        # Both folds bracket every valid occurrence even when a bound sits in a gap/overlap.
        lo = min(_to_us(naive_start.replace(tzinfo=self._tz, fold=f)) for f in (0, 1))
        hi = max(_to_us(naive_end.replace(tzinfo=self._tz, fold=f)) for f in (0, 1))
        off_lo, off_hi = self._offset_us(lo), self._offset_us(hi - 1)
        if off_lo == off_hi:
            return [(wall_start - off_lo, wall_end - off_lo)]
        # One offset change inside the window (DST): bisect for it, then clip each side.
        a, b = lo, hi - 1  # offset(a) == off_lo, offset(b) == off_hi
        while b - a > 1:
            mid = (a + b) // 2
            if self._offset_us(mid) == off_lo:
                a = mid
            else:
                b = mid
        change = b
        pieces = [
            (max(lo, wall_start - off_lo), min(change, wall_end - off_lo)),
            (max(change, wall_start - off_hi), min(hi, wall_end - off_hi)),
        ]
        merged: list[tuple[int, int]] = []
        for s, e in pieces:
            if e <= s:
                continue
            if merged and merged[-1][1] == s:
                merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        return merged

    def _table(self, year: int) -> _YearTable:
        """Business intervals of local calendar ``year`` (built once, then cached)."""
        table = self._table_cache.get(year)
        if table is not None:
            return table
        if not _MIN_TABLE_YEAR <= year <= _MAX_TABLE_YEAR:
            table = _EMPTY_TABLE
        else:
            starts: list[int] = []
            ends: list[int] = []
            cum = [0]
            d = dt.date(year, 1, 1)
            one_day = dt.timedelta(days=1)
            while d.year == year:
                if self.is_business_day(d):
                    for s, e in self._day_intervals(d):
                        # Guard against overlap from pathological zones so bisects stay valid.
                        s = max(s, ends[-1]) if ends else s
                        if e > s:
                            starts.append(s)
                            ends.append(e)
                            cum.append(cum[-1] + e - s)
                d += one_day
            table = _YearTable(starts, ends, cum, cum[-1])
        self._table_cache[year] = table
        return table

    def _tables_forward(self, at: dt.datetime) -> Iterator[_YearTable]:
        """Year tables from just before ``at`` onward; raises once the search is hopeless."""
        year = at.astimezone(self._tz).year - 1
        empty_run = 0
        while year <= _MAX_TABLE_YEAR:
            table = self._table(max(year, dt.MINYEAR))
            yield table
            empty_run = empty_run + 1 if table.total == 0 else 0
            if empty_run > _MAX_EMPTY_YEARS:
                break
            year += 1
        raise ValueError(
            f"no business time found after {at!r} (calendar {self.timezone!r} has none for "
            f"{_MAX_EMPTY_YEARS}+ consecutive years or the datetime range is exhausted)"
        )

    def _tables_backward(self, at: dt.datetime) -> Iterator[_YearTable]:
        """Year tables from just after ``at`` backward; raises once the search is hopeless."""
        year = at.astimezone(self._tz).year + 1
        empty_run = 0
        while year >= _MIN_TABLE_YEAR:
            table = self._table(min(year, dt.MAXYEAR))
            yield table
            empty_run = empty_run + 1 if table.total == 0 else 0
            if empty_run > _MAX_EMPTY_YEARS:
                break
            year -= 1
        raise ValueError(
            f"no business time found before {at!r} (calendar {self.timezone!r} has none for "
            f"{_MAX_EMPTY_YEARS}+ consecutive years or the datetime range is exhausted)"
        )
