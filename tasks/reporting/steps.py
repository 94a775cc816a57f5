"""The review loop's Prefect tasks: what flows/reports.py orchestrates.

Each compile task builds its report, records what it must and queues the founder's e-mail in one
transaction, and hands the flow a `Compiled`: what to publish and whether the mail was queued.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from db.playbook import get_playbook
from db.session import session_factory, transaction
from db.settings import get_settings
from tasks.calendar.clock import parse_as_of
from tasks.mail.delivery import DeliveryReport, deliver
from tasks.mail.render import render_message
from tasks.reporting.audit import record_audits
from tasks.reporting.memo import (
    build_memo,
    memo_context,
    memo_markdown,
    parse_month,
    previous_month,
    queue_memo_email,
)
from tasks.reporting.quarterly import (
    build_quarterly_reset,
    quarter_of,
    queue_quarterly_email,
    reset_markdown,
)
from tasks.reporting.shared import records_of
from tasks.reporting.weekly import build_weekly_review, queue_weekly_email


@dataclass(frozen=True)
class Compiled:
    """A report compiled for its flow: the period it covers (week, month or quarter), whether
    its e-mail was queued now (once per period), and what the flow publishes to the Prefect UI."""

    period: str
    queued: bool
    markdown: str
    description: str
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    actions_created: list[int] = field(default_factory=list)


@task(name="compile weekly review", cache_policy=NO_CACHE)
def compile_weekly_review(as_of: str | None = None) -> Compiled:
    """Evaluate thresholds, record corrective actions, queue the founder's review e-mail."""
    playbook, at = get_playbook(), parse_as_of(as_of)
    with transaction() as session:
        review = build_weekly_review(session, playbook, at)
        queued = queue_weekly_email(session, playbook, review, at)
    return Compiled(period=review.week, queued=queued, markdown=review.markdown,
                    description=f"Weekly onboarding review {review.week}",
                    tables={"stage-aging": records_of(review.stage_aging),
                            "blockers": records_of(review.blockers),
                            "corrective-actions": records_of(review.actions),
                            "risk-forecast": records_of(review.risks),
                            "kpis": records_of(review.kpis)},
                    actions_created=review.actions_created)


@task(name="publish report artifacts", cache_policy=NO_CACHE)
def publish_artifacts(prefix: str, report: Compiled) -> None:
    """A markdown artifact and one table artifact per table, keyed for the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown=report.markdown, key=prefix,
                             description=report.description)
    for name, rows in report.tables.items():
        create_table_artifact(table=rows, key=f"{prefix}-{name}",
                              description=f"{report.description}: {name.replace('-', ' ')}")


def deliver_due(now: dt.datetime) -> DeliveryReport:
    """Send what the outbox holds that is due (a report just queued, among others); a report
    dated in the past still goes out now."""
    return deliver(session_factory(), get_playbook(), get_settings(),
                   now=max(now, dt.datetime.now(dt.UTC)))


@task(name="deliver founder mail", cache_policy=NO_CACHE)
def deliver_outbox(as_of: str | None = None) -> dict[str, int]:
    """Send what the outbox holds that is due (the report just queued, among others)."""
    report = deliver_due(parse_as_of(as_of))
    return {"sent": report.sent, "retried": report.retried, "failed": report.failed}


@task(name="compile monthly memo", cache_policy=NO_CACHE)
def compile_monthly_memo(month: str | None = None, as_of: str | None = None) -> Compiled:
    """Build the memo for the month (default: last month) and queue it once (memo:YYYY-MM)."""
    playbook, at = get_playbook(), parse_as_of(as_of)
    month = parse_month(month) if month else previous_month(at, playbook)
    with transaction() as session:
        memo = build_memo(session, playbook, month)
        queued = queue_memo_email(session, playbook, memo, at)
    rendered = render_message("monthly_memo", memo_context(memo, inline=False))
    return Compiled(period=month, queued=queued, markdown=memo_markdown(memo),
                    description=rendered.subject, tables={"kpis": records_of(memo.table)})


@task(name="compile quarterly reset", cache_policy=NO_CACHE)
def compile_quarterly_reset(quarter: str | None = None,
                            as_of: str | None = None) -> Compiled:
    """Build the quarterly reset checklist and queue it once per quarter."""
    playbook, at = get_playbook(), parse_as_of(as_of)
    quarter = quarter or quarter_of(at, playbook)
    with transaction() as session:
        context = build_quarterly_reset(session, playbook, quarter)
        queued = queue_quarterly_email(session, playbook, context, at)
    return Compiled(period=quarter, queued=queued, markdown=reset_markdown(context),
                    description=f"Quarterly reset {quarter}")


@task(name="record 30-day audits", cache_policy=NO_CACHE)
def run_post_onboarding_audit(as_of: str | None = None) -> int:
    """Audit every client 30 days past handoff that has no audit yet."""
    playbook, at = get_playbook(), parse_as_of(as_of)
    with transaction() as session:
        return record_audits(session, playbook, at)
