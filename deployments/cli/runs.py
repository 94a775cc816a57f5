"""`handoff sweep`, `handoff reconcile`: sweeps now; Prefect brought in line with the record."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from db.validation import HandoffError
from deployments.cli.common import BUSY_EXIT, JsonOpt, emit, fail, guarded

app = typer.Typer()


@app.command("sweep")
@guarded
def sweep(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Sweep as if it were this time "
                                              "(ISO 8601; default now).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the reminder and escalation sweeps now, in-process."""
    from tasks.comms.sweeps import sweep_now

    reminders = sweep_now(as_of, messages=True, escalations=False)
    escalations = sweep_now(as_of, messages=False, escalations=True)
    emit(as_json, {"reminders": reminders, "escalations": escalations},
         f"reminders:   {_summary(reminders)}\nescalations: {_summary(escalations)}")


def _summary(report: dict[str, Any]) -> str:
    if "skipped" in report:
        return f"skipped ({report['skipped']})"
    queued = int(report["queued_messages"]) + int(report["queued_escalations"])
    return (f"{report['clients']} active clients, {queued} queued, {report['sent']} sent, "
            f"{report['retried']} to retry, {report['failed']} failed"
            + (f", {report['opened_risks']} risk{'s' if report['opened_risks'] != 1 else ''} opened"
               if report["opened_risks"] else ""))


@app.command("reconcile")
@guarded
def reconcile_cmd(as_json: JsonOpt = False) -> None:
    """Start missing client runs, resume runs whose condition is met, restart dead runs."""
    from sqlalchemy.exc import OperationalError

    from db.session import is_busy
    from tasks.prefect.reconcile import reconcile_runs
    from tasks.prefect.runs import (
        no_answer,
        prefect_failures,
        server_reachable,
        unreachable_note,
    )

    if not server_reachable():
        raise HandoffError(unreachable_note())
    # Other reconciles may run at the same time (other VAs, the served flow): the database
    # decides which of them does what, so both succeed. What stops one is a server or database
    # busier than its retries; what it did before is kept, and running it again does the rest.
    again = "reconcile stopped part-way; run it again{} (nothing is done twice)"
    try:
        report = reconcile_runs()
    except prefect_failures() as exc:
        raise fail(f"{no_answer(exc)}; {again.format(' once it answers')}", 1) from None
    except OperationalError as exc:
        if not is_busy(exc):
            raise
        raise fail(f"the database is busy; {again.format('')}", BUSY_EXIT) from None
    data = {"started": report.started, "resumed": report.resumed, "restarted": report.restarted}
    emit(as_json, data, f"started {report.started}, resumed {report.resumed}, "
                        f"restarted {report.restarted}")
