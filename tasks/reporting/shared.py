"""What every report shares: the prepared KPI context, JSON-safe rows, how clients answered."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from db.playbook import Playbook
from tasks.calendar.clock import calendar_for
from tasks.reporting.kpis.communication import (
    bounce_rate,
    client_response_rate,
    median_first_response_days,
    response_rates,
)
from tasks.reporting.kpis.frames import load_frames
from tasks.reporting.kpis.metrics import METRICS
from tasks.reporting.kpis.table import Context, prepare

SERIES_WEEKS = 10


def context_for(session: Session, playbook: Playbook, as_of: dt.datetime) -> Context:
    """Load every KPI frame once (one query per table) and prepare it."""
    frames = load_frames(session.connection(), as_of)
    return prepare(frames, playbook, calendar_for(playbook))


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows (ISO dates, NaN as null) for Prefect table artifacts and templates."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))  # type: ignore[no-any-return]


def client_replies(ctx: Context, start: pd.Timestamp, end: pd.Timestamp,
                   playbook: Playbook) -> dict[str, Any]:
    """How clients answered in the period: the three reply KPIs and the rate per template."""
    window = ctx.client_messages.window(start, end)
    first = ctx.first_responses.window(start, end)
    rates = response_rates(window, start, end)
    pct = METRICS["client_response_rate"]
    return {
        "sent": int(len(window)),
        "answered": pct.format(client_response_rate(window, start, end)),
        "first_response": METRICS["median_first_response_days"].format(
            median_first_response_days(first, start, end)),
        "bounced": METRICS["bounce_rate"].format(bounce_rate(window, start, end)),
        "templates": [{"template": r.template.replace("_", " "), "sent": int(r.sent),
                       "answered": int(r.answered), "rate": pct.format(r.rate)}
                      for r in rates.itertuples()],
    }
