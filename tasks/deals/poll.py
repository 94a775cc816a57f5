"""The polling alternative: won deals since a cursor kept in the database, no public URL needed.

Each source's cursor moves only after every deal up to it is recorded (or refused and logged:
a deal fixed in the CRM is modified again, so it comes back above the cursor).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from db.models import DealCursor, utcnow
from db.playbook import get_playbook
from db.session import transaction
from db.settings import Settings, get_settings
from db.validation import HandoffError
from tasks.deals.crm import CrmClient
from tasks.deals.intake import Recorded
from tasks.deals.receive import take_deals

FIRST_LOOKBACK = dt.timedelta(days=1)  # a first poll reads yesterday's wins, not the history
log = logging.getLogger(__name__)


@dataclass
class PollReport:
    """What one poll of one source found."""

    source: str
    seen: int = 0
    recorded: list[Recorded] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def configured_sources(settings: Settings) -> list[str]:
    """The CRMs this installation can poll (those with an API token)."""
    return [name for name, token in (("hubspot", settings.hubspot_token),
                                     ("pipedrive", settings.pipedrive_api_token)) if token]


def read_cursor(source: str) -> str | None:
    with transaction() as session:
        row = session.get(DealCursor, source)
        return row.cursor if row else None


def save_cursor(source: str, cursor: str) -> None:
    with transaction() as session:
        row = session.get(DealCursor, source)
        if row is None:
            session.add(DealCursor(source=source, cursor=cursor, updated_at=utcnow()))
        else:
            row.cursor, row.updated_at = cursor, utcnow()


def poll_source(source: str, crm: CrmClient | None = None) -> PollReport:
    """Ask one CRM for won deals since its cursor; record each once; move the cursor."""
    report = PollReport(source=source)
    client = crm or CrmClient(get_settings(), get_playbook().deals)
    try:
        cursor = read_cursor(source)
        since = utcnow() - FIRST_LOOKBACK
        if source == "hubspot":
            wins, newest = client.hubspot_won_since(
                int(cursor) if cursor else int(since.timestamp() * 1000))
            new_cursor = str(newest)
        else:
            deals, last = client.pipedrive_won_since(
                cursor or since.strftime("%Y-%m-%dT%H:%M:%SZ"))
            wins, new_cursor = deals, last or cursor or ""
        report.seen = len(wins)
        for deal in wins:
            try:
                report.recorded.extend(take_deals([deal], via="poll", crm=client))
            except HandoffError as exc:
                report.refused.append(str(exc))
                log.error("%s", exc)
        if new_cursor:
            save_cursor(source, new_cursor)
    finally:
        if crm is None:
            client.__exit__(None, None, None)
    return report
