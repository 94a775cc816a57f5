"""Input checks shared by the CLI, the CSV import and the Prefect UI forms.

Every failure is a HandoffError with one line naming the bad value and what is expected.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from email_validator import EmailNotValidError, validate_email


class HandoffError(ValueError):
    """A refused request: bad input, unknown id or a broken guardrail. Nothing was written."""


class NotFoundError(HandoffError):
    """An id that does not exist."""


class GuardrailError(HandoffError):
    """An action the playbook's guardrails refuse."""


MAX_TEXT = 2000
MAX_NAME = 200
MAX_ID = 2**31 - 1  # the database's integer column (PostgreSQL `integer`)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")
# Bidirectional overrides, embeddings and isolates reorder what a reader sees (a name can be
# made to display as another); a lone surrogate is a byte that was not UTF-8 (a terminal's
# Latin-1 argument, decoded by Python with surrogateescape).
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _visible(value: str) -> bool:
    """Whether anything a reader can see is left once format and space characters go."""
    return any(unicodedata.category(c)[0] not in ("C", "Z") for c in value)


def check_utf8(value: str, field: str) -> None:
    """Refuse text that came from bytes which were not UTF-8."""
    if _SURROGATE.search(value):
        raw = value.encode("utf-8", "surrogateescape")[:60]
        raise HandoffError(f"{field} {repr(raw)[1:]} is not UTF-8 text; set the terminal or "
                           "file to UTF-8")


def _show(value: str, limit: int = 60) -> str:
    """A value quoted for an error line: one line, not enormous."""
    shown = value if len(value) <= limit else value[:limit] + "…"
    return repr(shown)


def clean_text(value: str | None, field: str, *, required: bool = False,
               max_len: int = MAX_TEXT, multiline: bool = True) -> str | None:
    """Trim free text; refuse control characters and enormous values."""
    if value is None or not value.strip():
        if required:
            raise HandoffError(f"{field} is required and cannot be empty")
        return None
    check_utf8(value, field)
    value = unicodedata.normalize("NFC", value.strip())
    allowed = value.replace("\n", "").replace("\t", "") if multiline else value
    if _CONTROL.search(allowed) or (not multiline and ("\n" in value or "\r" in value)):
        raise HandoffError(f"{field} {_show(value)} contains control characters; use plain text")
    if _BIDI.search(value):
        raise HandoffError(f"{field} {_show(value)} contains a right-to-left or left-to-right "
                           "override, which changes how the text displays; type it plainly")
    if not _visible(value):
        if required:
            raise HandoffError(f"{field} {_show(value)} has only invisible characters; it is "
                               "required")
        return None
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    if len(value) > max_len:
        raise HandoffError(f"{field} is {len(value)} characters; at most {max_len} allowed")
    return value


def clean_name(value: str | None, field: str) -> str:
    """A required one-line name (client, segment, offer)."""
    cleaned = clean_text(value, field, required=True, max_len=MAX_NAME, multiline=False)
    assert cleaned is not None
    return cleaned


def clean_email(value: str | None, field: str = "email") -> str:
    """A syntactically valid email address, normalised; no DNS lookups."""
    if value is None or not value.strip():
        raise HandoffError(f"{field} is required (an email address like name@example.com)")
    raw = value.strip()
    check_utf8(raw, field)
    if _CONTROL.search(raw) or _BIDI.search(raw) or any(c in raw for c in "\r\n,;<>"):
        raise HandoffError(f"{field} {_show(raw)} is not an email address like name@example.com")
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError:
        raise HandoffError(
            f"{field} {_show(raw)} is not an email address like name@example.com"
        ) from None


def clean_emails(value: str | list[str] | None, field: str = "contact") -> list[str]:
    """One or more addresses, comma-separated or repeated."""
    parts = value if isinstance(value, list) else (value or "").split(",")
    emails = [clean_email(p, field) for p in parts if p and p.strip()]
    if not emails:
        raise HandoffError(f"{field} is required (an email address like name@example.com)")
    return list(dict.fromkeys(emails))


def parse_instant(value: str | dt.datetime | None, tz: ZoneInfo, field: str = "--at",
                  *, default_now: bool = True) -> dt.datetime:
    """An ISO 8601 instant; without an offset it is read in the playbook's timezone."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if default_now:
            return dt.datetime.now(dt.UTC)
        raise HandoffError(f"{field} is required (ISO 8601, e.g. 2026-11-25T14:30)")
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise HandoffError(
                f"{field} {_show(value)} is not an ISO 8601 time (e.g. 2026-11-25T14:30 or "
                "2026-11-25T14:30-05:00)"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    if not (1990 <= parsed.year <= 2200):
        raise HandoffError(f"{field} {_show(str(value))} is out of range (years 1990–2200)")
    return parsed.astimezone(dt.UTC)


def parse_date(value: str | dt.date | None, field: str) -> dt.date | None:
    """An ISO date (YYYY-MM-DD), or None when not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        parsed = dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise HandoffError(f"{field} {_show(str(value))} is not a date like 2026-12-01") from None
    if not (1990 <= parsed.year <= 2200):
        raise HandoffError(f"{field} {_show(str(value))} is out of range (years 1990–2200)")
    return parsed


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def parse_timezone(value: str | None, field: str) -> str | None:
    """An IANA timezone name (e.g. Australia/Sydney), or None when not given."""
    if value is None or not value.strip():
        return None
    name = value.strip()
    try:
        # ZoneInfo also opens a path-like key that is no zone ("../x", a directory): only names
        # in the zone database are zones.
        if name not in _zone_names():
            raise ZoneInfoNotFoundError(name)
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise HandoffError(f"{field} {_show(name)} is not an IANA timezone; expected a name "
                           "like Australia/Sydney or Europe/Berlin") from None
    return name


def parse_id(value: str | int, field: str) -> int:
    """A record id: a whole number the database can hold."""
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_ID:
        raise HandoffError(f"{field} {_show(text)} is not an id; expected a whole number from "
                           f"1 to {MAX_ID}")
    return int(text)


def one_of(value: str, allowed: Iterable[str], field: str) -> str:
    """The value, if it is one of the allowed keys; otherwise an error listing them."""
    keys = list(allowed)
    if value not in keys:
        raise HandoffError(
            f"{field} {_show(value)} is not known; expected one of {', '.join(keys)}"
        )
    return value
