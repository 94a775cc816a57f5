"""The review loop, scheduled: weekly review, monthly memo, quarterly reset, 30-day audit."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.reporting.steps import (
    compile_monthly_memo,
    compile_quarterly_reset,
    compile_weekly_review,
    deliver_outbox,
    publish_artifacts,
    run_post_onboarding_audit,
)


@flow(name="weekly-review")
def weekly_review(as_of: str | None = None) -> dict[str, Any]:
    """The 30-minute agenda: thresholds to actions, artifacts in the UI, one e-mail a week."""
    review = compile_weekly_review(as_of)
    publish_artifacts("weekly-review", review)
    delivery = deliver_outbox(as_of)
    return {"week": review.period, "queued": review.queued,
            "actions_created": review.actions_created, "delivery": delivery}


@flow(name="monthly-memo")
def monthly_memo(month: str | None = None, as_of: str | None = None) -> dict[str, Any]:
    """The founder's one-page memo with charts and the KPI table, once per month."""
    memo = compile_monthly_memo(month, as_of)
    publish_artifacts("monthly-memo", memo)
    delivery = deliver_outbox(as_of)
    return {"month": memo.period, "queued": memo.queued, "delivery": delivery}


@flow(name="quarterly-reset")
def quarterly_reset(quarter: str | None = None, as_of: str | None = None) -> dict[str, Any]:
    """The quarterly reset checklist with the data behind each item, once per quarter."""
    reset = compile_quarterly_reset(quarter, as_of)
    publish_artifacts("quarterly-reset", reset)
    delivery = deliver_outbox(as_of)
    return {"quarter": reset.period, "queued": reset.queued, "delivery": delivery}


@flow(name="post-onboarding-audit")
def post_onboarding_audit(as_of: str | None = None) -> int:
    """Audit every client 30 days past handoff: milestone, incidents, early churn signals."""
    return run_post_onboarding_audit(as_of)
