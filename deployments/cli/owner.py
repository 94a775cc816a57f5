"""`handoff owner away`: out of office, the backup takes over."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from db.validation import HandoffError, parse_date
from deployments.cli.common import ByOpt, JsonOpt, emit, guarded, transaction
from tasks.onboarding import records

app = typer.Typer()


@app.command("away")
@guarded
def owner_away(
    email: Annotated[str, typer.Argument(help="Owner's email.")],
    until: Annotated[str, typer.Option(help="Back on this date (YYYY-MM-DD).")],
    by: ByOpt = "va",
    as_json: JsonOpt = False,
) -> None:
    """Mark an owner out of office; the backup owner takes over."""
    back = parse_date(until, "--until")
    if back is None:
        raise HandoffError("--until is required (a date like 2026-12-01)")
    with transaction() as (session, playbook):
        row = records.set_owner_away(session, email, until=back, at=dt.datetime.now(dt.UTC),
                                     by=by, tz=playbook.calendar.tz)
        address = row.email
    emit(as_json, {"email": address, "until": back},
         f"{address} is away until {back.isoformat()}; backups take over")
