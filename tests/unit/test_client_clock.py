"""When client mail may go out: the business's calendar and the client's own hours, and the
playbook keys that say how a reminder cadence ends. Pure: no database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from db.playbook import Playbook, PlaybookError, get_playbook, load_playbook
from db.validation import HandoffError, parse_timezone
from tasks.calendar.clock import in_send_window, next_send_window
from tests.unit.test_playbook import _raw, _set, _write

NY = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
BERLIN = ZoneInfo("Europe/Berlin")


def ny(month: int, day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=NY)


def edited(tmp_path: Path, **changes: object) -> Playbook:
    """The shipped playbook with these dotted keys changed (`calendar__client_hours__start`)."""
    raw = _raw()
    for path, value in changes.items():
        _set(raw, path.replace("__", "."), value)
    return load_playbook(_write(tmp_path, raw))


@pytest.mark.parametrize(("at", "zone", "expected"), [
    # No client timezone: the business's hours, as always.
    (ny(3, 2, 8), None, ny(3, 2, 9)),
    # Berlin overlaps New York 09:00-11:00 (EST, CET): the first instant both allow.
    (ny(3, 2, 8), "Europe/Berlin", ny(3, 2, 9)),
    (ny(3, 2, 12), "Europe/Berlin", ny(3, 3, 9)),  # 18:00 in Berlin: tomorrow 09:00 NY (15:00)
    # Sydney never overlaps New York 09-17: Sydney's own hours. Monday 10:00 NY is Tuesday
    # 02:00 in Sydney: Tuesday 09:00 Sydney, 17:00 Monday in New York.
    (ny(3, 2, 10), "Australia/Sydney", dt.datetime(2026, 3, 3, 9, tzinfo=SYDNEY)),
    # Friday 18:00 NY is Saturday 10:00 in Sydney: Monday 09:00 Sydney (Sunday evening in NY,
    # after the American clocks went forward).
    (ny(3, 6, 18), "Australia/Sydney", dt.datetime(2026, 3, 9, 9, tzinfo=SYDNEY)),
    # Overlapping hours keep the business's holidays: Christmas Eve (closed) and Day in NY.
    (ny(12, 24, 10), "Europe/Berlin", ny(12, 28, 9)),
])
def test_the_send_window(playbook: Playbook, at: dt.datetime, zone: str | None,
                         expected: dt.datetime) -> None:
    opens = next_send_window(playbook, at, zone)
    assert opens == expected
    assert in_send_window(playbook, opens, zone)
    assert opens == at or not in_send_window(playbook, at, zone)


def test_client_hours_keys_move_the_window(tmp_path: Path) -> None:
    """calendar.client_hours.start / end / workdays each change when a Sydney client is mailed."""
    saturday = dt.datetime(2026, 3, 7, 10, tzinfo=SYDNEY)
    shipped = get_playbook()
    assert next_send_window(shipped, saturday, "Australia/Sydney") == dt.datetime(
        2026, 3, 9, 9, tzinfo=SYDNEY)
    weekend = edited(tmp_path, calendar__client_hours__workdays=[
        "mon", "tue", "wed", "thu", "fri", "sat"])
    assert next_send_window(weekend, saturday, "Australia/Sydney") == saturday
    late = edited(tmp_path, calendar__client_hours__start="10:30")
    assert next_send_window(late, saturday, "Australia/Sydney") == dt.datetime(
        2026, 3, 9, 10, 30, tzinfo=SYDNEY)
    early_close = edited(tmp_path, calendar__client_hours__end="09:30")
    monday_ten = dt.datetime(2026, 3, 9, 10, tzinfo=SYDNEY)
    assert next_send_window(shipped, monday_ten, "Australia/Sydney") == monday_ten
    assert next_send_window(early_close, monday_ten, "Australia/Sydney") == dt.datetime(
        2026, 3, 10, 9, tzinfo=SYDNEY)


@pytest.mark.parametrize(("path", "value", "message"), [
    ("slas.intake_reminder.at_escalation", "halt",
     r"slas\.intake_reminder\.at_escalation: Input should be 'pause', 'slow' or 'stop'"),
    ("slas.intake_reminder.max_cycles", 0, r"slas\.intake_reminder\.max_cycles: Input should "
                                           r"be greater than or equal to 1"),
    ("slas.setup_progress_update.max_cycles", 3,
     r"slas\.setup_progress_update: max_cycles and at_escalation end a reminder cadence"),
    ("calendar.client_hours.end", "08:00",
     r"calendar\.client_hours: .*end 08:00:00 must be after start"),
    ("calendar.client_hours.workdays", ["mon", "funday"], r"calendar\.client_hours\.workdays"),
])
def test_a_bad_end_rule_or_client_hours_is_refused_naming_it(tmp_path: Path, path: str,
                                                             value: object,
                                                             message: str) -> None:
    raw = _raw()
    _set(raw, path, value)
    with pytest.raises(PlaybookError, match=message):
        load_playbook(_write(tmp_path, raw))


@pytest.mark.parametrize("value", ["Mars/Olympus", "australia/sydney", "../../etc/passwd",
                                   "Australia", "UTC+10"])
def test_a_bad_client_timezone_is_one_line_naming_it(value: str) -> None:
    with pytest.raises(HandoffError, match=r"^client-tz '.*' is not an IANA timezone; "
                                           "expected a name like Australia/Sydney"):
        parse_timezone(value, "client-tz")
    assert parse_timezone(" Australia/Sydney ", "client-tz") == "Australia/Sydney"
    assert parse_timezone("", "client-tz") is None
