"""Import closed deals from a CSV (a CRM export or a spreadsheet): every row valid, or none."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from db.validation import HandoffError, parse_date, parse_instant
from tasks.onboarding.records import NewOnboarding

REQUIRED = ["client", "segment", "offer", "owner", "backup", "contact", "closed_at"]
OPTIONAL = ["kickoff_by", "first_milestone", "terms", "scope", "client_tz"]
MAX_ROWS = 10_000
MAX_BYTES = 20 * 2**20
# Control characters other than tab, CR and LF (which end lines).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x85\u2028\u2029]")


def read_deals(path: Path, tz: ZoneInfo) -> list[NewOnboarding]:
    """Parse and validate every row; the first bad row raises naming its line and field."""
    text = _read_text(path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HandoffError(f"CSV file {str(path)!r} cannot be read: {first}") from None
    frame.columns = [str(c).strip().lower().replace(" ", "_") for c in frame.columns]
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise HandoffError(
            f"CSV file {str(path)!r} lacks column(s) {', '.join(missing)}; expected columns "
            f"{', '.join(REQUIRED + OPTIONAL)}"
        )
    if frame.empty:
        raise HandoffError(f"CSV file {str(path)!r} has no rows")
    if len(frame) > MAX_ROWS:
        raise HandoffError(f"CSV file has {len(frame)} rows; import at most {MAX_ROWS} at once")
    deals = []
    for number, row in enumerate(frame.to_dict(orient="records"), start=2):
        try:
            deals.append(NewOnboarding.parse(
                client=row["client"], segment=row["segment"], offer=row["offer"],
                owner=row["owner"], backup=row["backup"],
                contacts=[c for c in row["contact"].replace(";", ",").split(",")],
                closed_at=_closed(row["closed_at"], tz),
                kickoff_by=parse_date(row.get("kickoff_by"), "kickoff_by"),
                first_milestone=parse_date(row.get("first_milestone"), "first_milestone"),
                terms=row.get("terms"), scope=row.get("scope"),
                client_tz=row.get("client_tz"),
            ))
        except HandoffError as exc:
            raise HandoffError(f"{path.name} line {number}: {exc}") from None
    return deals


def _read_text(path: Path) -> str:
    """The file as UTF-8 text, refused whole if any line holds a control character: the CSV
    parser would cut a field at a NUL byte without a word (`Bad\\x00Client` imported as `Bad`)."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise HandoffError(f"CSV file {str(path)!r} is over {MAX_BYTES // 2**20} MiB; "
                               "split it")
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise HandoffError(f"CSV file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise HandoffError(f"{path.name} line {line}: byte {exc.object[exc.start]:#04x} is not "
                           "UTF-8; save the file as UTF-8") from None
    bad = _CONTROL.search(text)
    if bad:
        number = text.count("\n", 0, bad.start()) + 1
        line_text = text.splitlines()[number - 1] if text.splitlines() else ""
        raise HandoffError(f"{path.name} line {number}: control character {bad.group()!r} in "
                           f"{line_text[:60]!r}; use plain text")
    return text


def _closed(value: str, tz: ZoneInfo) -> dt.datetime:
    return parse_instant(value, tz, "closed_at", default_now=False)
