"""`handoff memo`, `handoff kpi`: the founder's monthly memo and the KPI table."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from db.validation import HandoffError
from deployments.cli.common import JsonOpt, emit, guarded, transaction, when

app = typer.Typer()


@app.command("memo")
@guarded
def memo(
    month: Annotated[str | None, typer.Option(help="Month YYYY-MM (default: last "
                                              "month).")] = None,
    send: Annotated[bool, typer.Option("--send", help="E-mail it to the founder (once per "
                                       "month); without it, write files.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The founder's one-page monthly memo: HTML and PNG charts, or sent by e-mail."""
    from db.settings import get_settings
    from tasks.reporting.memo import (
        build_memo,
        parse_month,
        previous_month,
        queue_memo_email,
        write_memo_files,
    )
    from tasks.reporting.steps import deliver_due

    now = dt.datetime.now(dt.UTC)
    with transaction() as (session, playbook):
        chosen = parse_month(month) if month else previous_month(now, playbook)
        built = build_memo(session, playbook, chosen)
        queued = queue_memo_email(session, playbook, built, now) if send else False
    if send:
        sent = deliver_due(now).sent
        emit(as_json, {"month": chosen, "queued": queued, "sent": sent},
             f"memo {chosen}: " + ("queued and sent to the founder" if queued else
                                   "already sent this month (memo:" + chosen + ")"))
        return
    path = write_memo_files(built, get_settings().reports_dir)
    emit(as_json, {"month": chosen, "path": str(path)}, str(path))


@app.command("kpi")
@guarded
def kpi(
    as_of: Annotated[str | None, typer.Option("--as-of", help="End of the period (ISO "
                                              "8601; default now).")] = None,
    days: Annotated[int, typer.Option(help="Length of the period in days.")] = 28,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The KPI table for the last N days, for the portfolio, each segment and offer."""
    from tasks.reporting.kpis.metrics import METRICS
    from tasks.reporting.kpis.table import kpi_table
    from tasks.reporting.shared import context_for, records_of

    if days < 1:
        raise HandoffError(f"--days {days} must be at least 1")
    at = when(as_of, "--as-of")
    with transaction() as (session, playbook):
        ctx = context_for(session, playbook, at)
    table = kpi_table(ctx, at - dt.timedelta(days=days), at)
    if csv:
        typer.echo(table.round(4).to_csv(index=False).rstrip())
        return
    human = table.copy()
    for key, metric in METRICS.items():
        human[key] = table[key].map(metric.format)
    human.columns = ["scope", "group", *[METRICS[k].label for k in METRICS]]
    emit(as_json, records_of(table),
         f"KPIs for the {days} days to {at.date().isoformat()}\n"
         + human.set_index(["scope", "group"]).T.to_string())
