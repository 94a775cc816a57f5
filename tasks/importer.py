"""Import closed deals from a CSV (a CRM export or a spreadsheet): every row valid, or none."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from db.validation import HandoffError, parse_date, parse_instant
from tasks.records import NewOnboarding

REQUIRED = ["client", "segment", "offer", "owner", "backup", "contact", "closed_at"]
OPTIONAL = ["kickoff_by", "first_milestone", "terms", "scope"]
MAX_ROWS = 10_000


def read_deals(path: Path, tz: ZoneInfo) -> list[NewOnboarding]:
    """Parse and validate every row; the first bad row raises naming its line and field."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise HandoffError(f"CSV file {str(path)!r} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
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
            ))
        except HandoffError as exc:
            raise HandoffError(f"{path.name} line {number}: {exc}") from None
    return deals


def _closed(value: str, tz: ZoneInfo) -> dt.datetime:
    return parse_instant(value, tz, "closed_at", default_now=False)
