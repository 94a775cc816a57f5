"""`handoff report weekly`, `handoff memo`, `handoff kpi`, `handoff demo`: the review loop.

No `from __future__ import annotations` here: typer evaluates each command's annotations in
this module's globals, and the option types are imported inside `register`.
"""

import datetime as dt
from typing import Annotated

import typer

from db.validation import HandoffError


def register(app: typer.Typer) -> None:
    """Add the report commands to the main `handoff` app."""
    from deployments.cli import JsonOpt, emit, guarded, transaction, when

    report_app = typer.Typer(help="Reviews: the weekly onboarding review.", no_args_is_help=True)
    app.add_typer(report_app, name="report")

    @report_app.command("weekly")
    @guarded
    def report_weekly(
        as_of: Annotated[str | None, typer.Option("--as-of", help="Review as if it were this "
                                                  "time (ISO 8601; default now).")] = None,
        send: Annotated[bool, typer.Option("--send", help="Also e-mail it to the founder "
                                           "(once per ISO week).")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Last week's review: stage aging, blockers, threshold breaks, actions, risks."""
        from tasks.reporting.reports import build_weekly_review, deliver_due, queue_weekly_email

        at = when(as_of, "--as-of")
        with transaction() as (session, playbook):
            review = build_weekly_review(session, playbook, at)
            queued = queue_weekly_email(session, playbook, review, at) if send else False
        sent = deliver_due(at).sent if send else 0
        data = {"week": review.week, "breaches": [b.title for b in review.breaches],
                "actions_created": review.actions_created, "queued": queued, "sent": sent,
                "markdown": review.markdown}
        tail = f"\ne-mail: {'queued and sent' if queued else 'already sent this week'}" \
            if send else ""
        emit(as_json, data, review.markdown.rstrip() + tail)

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
        from tasks.reporting.reports import (
            build_memo,
            deliver_due,
            parse_month,
            previous_month,
            queue_memo_email,
            write_memo_files,
        )

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
        from tasks.reporting import kpis
        from tasks.reporting.reports import context_for, records_of

        if days < 1:
            raise HandoffError(f"--days {days} must be at least 1")
        at = when(as_of, "--as-of")
        with transaction() as (session, playbook):
            ctx = context_for(session, playbook, at)
        table = kpis.kpi_table(ctx, at - dt.timedelta(days=days), at)
        if csv:
            typer.echo(table.round(4).to_csv(index=False).rstrip())
            return
        human = table.copy()
        for key, metric in kpis.METRICS.items():
            human[key] = table[key].map(metric.format)
        human.columns = ["scope", "group", *[kpis.METRICS[k].label for k in kpis.METRICS]]
        emit(as_json, records_of(table),
             f"KPIs for the {days} days to {at.date().isoformat()}\n"
             + human.set_index(["scope", "group"]).T.to_string())

    @app.command("demo")
    @guarded
    def demo(
        n: Annotated[int, typer.Option("--onboardings", help="How many onboardings.")] = 300,
        months: Annotated[int, typer.Option(help="Months of history.")] = 6,
        seed: Annotated[int, typer.Option(help="Random seed (same seed, same history).")] = 7,
        force: Annotated[bool, typer.Option("--force", help="Load even if the database "
                                            "already has onboardings.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Load a realistic seeded history so the memo and reviews have something to show."""
        from sqlalchemy import func, select

        from db.models import Onboarding
        from db.settings import get_settings
        from tasks.history.generator import generate_history
        from tasks.reporting.reports import (
            build_memo,
            previous_month,
            record_audits,
            write_memo_files,
        )

        if n < 1 or months < 1:
            raise HandoffError("--onboardings and --months must be at least 1")
        now = dt.datetime.now(dt.UTC)
        with transaction() as (session, playbook):
            existing = int(session.scalar(select(func.count()).select_from(Onboarding)) or 0)
            if existing and not force:
                raise HandoffError(f"the database already has {existing} onboardings; "
                                   "'handoff demo --force' adds the demo history anyway")
            report = generate_history(session, playbook, n=n, months=months, end=now,
                                      seed=seed)
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

