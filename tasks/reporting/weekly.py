"""The weekly review: the 30-minute agenda, its corrective actions, its e-mail to the founder."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from db.playbook import STAGE_ORDER, Playbook
from tasks.calendar.clock import kickoff_window_end
from tasks.comms import keys
from tasks.mail.outbox import Draft, business_context, enqueue
from tasks.mail.render import render_page
from tasks.reporting.actions import open_actions, record_actions
from tasks.reporting.kpis.blockers import blockers_by_type
from tasks.reporting.kpis.founder import interruptions_by_category
from tasks.reporting.kpis.metrics import METRICS
from tasks.reporting.kpis.quality import RED_FLAG_LABELS, red_flags
from tasks.reporting.kpis.speed import stage_aging
from tasks.reporting.kpis.table import Context, weekly_series
from tasks.reporting.kpis.triggers import Breach, Signal, capacity_signals, evaluate_thresholds
from tasks.reporting.questions import audit_answers
from tasks.reporting.shared import SERIES_WEEKS, client_replies, context_for, records_of
from tasks.risks.views import reviews_due


def local_day(playbook: Playbook, at: Any) -> str:
    """A day as the business reads it (Mon 02 Nov), or - when missing."""
    if at is None or (isinstance(at, float) and math.isnan(at)) or pd.isna(at):
        return "-"
    return pd.Timestamp(at).tz_convert(playbook.calendar.timezone).strftime("%a %d %b")


def week_ahead(ctx: Context, as_of: dt.datetime) -> dt.datetime:
    """The end of the week the review looks at: five business days after `as_of`."""
    return ctx.calendar.add_business_days(as_of, 5)


def risk_forecast(ctx: Context, playbook: Playbook, as_of: dt.datetime) -> pd.DataFrame:
    """Active clients likely to breach an SLA next week, from their clocks."""
    horizon = pd.Timestamp(week_ahead(ctx, as_of))
    now = pd.Timestamp(as_of)
    ob = ctx.frames.onboardings
    active = ob[(ob["status"] == "active") & ob["ready_at"].isna()]
    rows = []
    for r in active.itertuples():
        stage = playbook.stage(str(r.stage))
        due = r.next_action_due
        if pd.notna(due) and due <= horizon:
            state = "already past its SLA" if due < now else "due next week"
            rows.append({"id": r.id, "client": r.client_name, "stage": stage.name,
                         "owner": r.owner_email, "risk": f"{stage.name} {state}",
                         "due": local_day(playbook, due), "_at": due})
        if pd.notna(r.kickoff_by) and pd.isna(r.kickoff_at):
            window_end = pd.Timestamp(kickoff_window_end(playbook, r.kickoff_by))
            if window_end <= horizon and stage.key in STAGE_ORDER[:3]:
                rows.append({"id": r.id, "client": r.client_name, "stage": stage.name,
                             "owner": r.owner_email,
                             "risk": f"kickoff committed by {r.kickoff_by} not held",
                             "due": local_day(playbook, window_end), "_at": window_end})
    blockers = ctx.frames.blockers
    critical = blockers[blockers["critical"].astype(bool) & blockers["resolved_at"].isna()
                        & blockers["onboarding_id"].isin(active["id"])]
    names = active.set_index("id")
    for b in critical.itertuples():
        client = names.loc[b.onboarding_id]
        rows.append({"id": b.onboarding_id, "client": client["client_name"],
                     "stage": playbook.stage(str(client["stage"])).name,
                     "owner": client["owner_email"],
                     "risk": f"critical {str(b.type).replace('_', ' ')} blocker open",
                     "due": local_day(playbook, b.opened_at), "_at": b.opened_at})
    frame = pd.DataFrame(rows, columns=["id", "client", "stage", "owner", "risk", "due", "_at"])
    return frame.sort_values("_at").drop(columns="_at").reset_index(drop=True)


@dataclass
class WeeklyReview:
    """Everything the weekly review says, as tables and sentences."""

    week: str
    as_of: dt.datetime
    kpis: pd.DataFrame
    stage_aging: pd.DataFrame
    blockers: pd.DataFrame
    breaches: list[Breach]
    actions_created: list[int]
    actions: pd.DataFrame
    risks: pd.DataFrame
    answers: list[dict[str, str]]
    signals: list[Signal]
    red_flags: pd.DataFrame
    interruptions: pd.DataFrame
    replies: dict[str, Any] = field(default_factory=dict)
    risk_reviews: list[dict[str, Any]] = field(default_factory=list)  # by owner
    markdown: str = ""
    context: dict[str, Any] = field(default_factory=dict)


def build_weekly_review(session: Session, playbook: Playbook,
                        as_of: dt.datetime) -> WeeklyReview:
    """The 30-minute agenda for the week before `as_of`, recording threshold breaches."""
    ctx = context_for(session, playbook, as_of)
    series = weekly_series(ctx, as_of, SERIES_WEEKS)
    start, end = series["start"].iloc[-1], series["end"].iloc[-1]
    breaches = evaluate_thresholds(playbook, series)
    created = record_actions(session, playbook, breaches, as_of)
    session.flush()
    last, prev = series.iloc[-1], series.iloc[-2]
    kpi_rows = pd.DataFrame([{
        "metric": METRICS[k].label, "last_week": METRICS[k].format(last[k]),
        "week_before": METRICS[k].format(prev[k]),
    } for k in METRICS])
    aging = stage_aging(ctx.frames.onboardings, ctx.stays, ctx.calendar, start, end,
                             now=pd.Timestamp(as_of))
    aging["stage"] = aging["stage"].map(lambda s: playbook.stage(s).name)
    aging = aging.round(1)
    blockers = blockers_by_type(ctx.frames.blockers, ctx.calendar, start, end).round(1)
    review = WeeklyReview(
        week=str(last["week"]), as_of=as_of, kpis=kpi_rows, stage_aging=aging,
        blockers=blockers, breaches=breaches, actions_created=created,
        actions=open_actions(session, playbook, as_of),
        risks=risk_forecast(ctx, playbook, as_of),
        answers=audit_answers(ctx, playbook, start, end),
        signals=capacity_signals(ctx, playbook, series, pd.Timestamp(as_of)),
        red_flags=red_flags(ctx.frames, ctx.calendar, ctx.cadence_days, start, end),
        interruptions=interruptions_by_category(ctx.frames.interruptions, start, end),
        replies=client_replies(ctx, start, end, playbook),
        risk_reviews=reviews_due(session, playbook, week_ahead(ctx, as_of)),
    )
    review.context = weekly_context(playbook, review)
    review.markdown = render_page("reports/weekly_review.md", review.context)
    return review


def weekly_context(playbook: Playbook, review: WeeklyReview) -> dict[str, Any]:
    """What the weekly templates (mail and markdown) read."""
    flags = review.red_flags
    flag_counts = {RED_FLAG_LABELS[k]: int(flags[k].sum()) for k in RED_FLAG_LABELS
                   if k in flags}
    return {
        "business": business_context(playbook),
        "review": {
            "week": review.week,
            "kpis": records_of(review.kpis),
            "stage_aging": records_of(review.stage_aging),
            "blockers": records_of(review.blockers),
            "breaches": [{"title": b.title, "lane": b.owner_lane,
                          "owner": str(playbook.lanes[b.owner_lane].owner)}
                         for b in review.breaches],
            "actions": records_of(review.actions),
            "risks": records_of(review.risks.head(15)),
            "risk_count": int(review.risks["id"].nunique()),
            "answers": review.answers,
            "signals": [{"text": s.text, "lane": s.lane,
                         "lane_name": playbook.lanes[s.lane].name} for s in review.signals],
            "red_flags": {k: v for k, v in flag_counts.items() if v},
            "interruptions": records_of(review.interruptions),
            "replies": review.replies,
            "risk_reviews": review.risk_reviews,
        },
    }


def queue_weekly_email(session: Session, playbook: Playbook, review: WeeklyReview,
                       now: dt.datetime) -> bool:
    """Queue the review to the founder, once per ISO week."""
    _row, created = enqueue(session, playbook, Draft(
        onboarding_id=None, template="weekly_review",
        recipients=[str(playbook.business.founder.email)], key=keys.weekly_review(review.week),
        context=review.context), now=now)
    return created
