"""`handoff demo`: load the demo history so a new user sees a real memo and a busy Prefect UI."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from db.validation import HandoffError
from deployments.cli.common import JsonOpt, emit, guarded, transaction

app = typer.Typer()


@app.command("demo")
@guarded
def demo(
    n: Annotated[int, typer.Option("--onboardings", help="How many onboardings.")] = 300,
    months: Annotated[int, typer.Option(help="Months of history.")] = 6,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same history).")] = 7,
    force: Annotated[bool, typer.Option("--force", help="Load even if the database "
                                        "already has onboardings.")] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the demo clients and "
                                        "everything recorded about them instead.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Load a realistic seeded history (flagged demo: never mailed) so the memo and reviews
    have something to show; --clear removes it."""
    if clear:
        _clear(as_json)
        return
    from sqlalchemy import func, select

    from db.models import Onboarding
    from db.settings import get_settings
    from tasks.history.demo import load_demo
    from tasks.reporting.audit import record_audits
    from tasks.reporting.memo import build_memo, previous_month, write_memo_files

    if n < 1 or months < 1:
        raise HandoffError("--onboardings and --months must be at least 1")
    now = dt.datetime.now(dt.UTC)
    with transaction() as (session, playbook):
        existing = int(session.scalar(select(func.count()).select_from(Onboarding)) or 0)
        if existing and not force:
            raise HandoffError(f"the database already has {existing} onboardings; "
                               "'handoff demo --force' adds the demo history anyway")
        report = load_demo(session, playbook, n=n, months=months, end=now, seed=seed)
        audits = record_audits(session, playbook, now)
    with transaction() as (session, playbook):
        month = previous_month(now, playbook)
        path = write_memo_files(build_memo(session, playbook, month),
                                get_settings().reports_dir)
    data = {"onboardings": report.onboardings, "active": report.active,
            "rows": report.rows, "audits": audits, "memo": str(path)}
    emit(as_json, data,
         f"loaded {report.onboardings} onboardings ({report.active} still active) over "
         f"{months} months, {audits} 30-day audits\nmemo for {month}: {path}\n"
         f"next: 'handoff report weekly', 'handoff kpi', 'handoff memo --send'")


def _clear(as_json: bool) -> None:
    from tasks.history.demo import clear_demo
    from tasks.prefect.runs import cancel_runs

    with transaction() as (session, _playbook):
        cleared = clear_demo(session)
    runs = cancel_runs(cleared.run_ids, "demo client removed (handoff demo --clear)")
    emit(as_json, {"onboardings": cleared.onboardings, "rows": cleared.rows, "runs": runs},
         f"removed {cleared.onboardings} demo onboardings and {sum(cleared.rows.values())} "
         f"rows recorded about them; {runs}")
