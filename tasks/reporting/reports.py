"""The review loop: weekly review, monthly memo, quarterly reset and the 30-day audit.

Each report loads the KPI frames once (tasks.kpis), decides with pure functions, records what
must be recorded (corrective actions, audits) through the caller's session, and queues its
e-mail to the founder through the outbox under a key that makes it go out exactly once.
The @task functions at the bottom are what the flows in flows/reports.py orchestrate.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import CorrectiveAction
from db.playbook import STAGE_ORDER, Playbook
from db.validation import HandoffError
from tasks.calendar.clock import (
    calendar_for,
    in_business_days,
    kickoff_window_end,
    parse_as_of,
)
from tasks.comms import keys
from tasks.mail.delivery import DeliveryReport
from tasks.mail.message import Attachment
from tasks.mail.outbox import Draft, business_context, enqueue
from tasks.mail.render import catalog, render_message, render_page
from tasks.onboarding import records
from tasks.onboarding.records import log_event
from tasks.reporting import charts
from tasks.reporting.kpis.blockers import blockers_by_type
from tasks.reporting.kpis.communication import (
    bounce_rate,
    client_response_rate,
    median_first_response_days,
    response_rates,
)
from tasks.reporting.kpis.completeness import missing_at_handoff_qa
from tasks.reporting.kpis.founder import interruptions_by_category
from tasks.reporting.kpis.frames import load_frames
from tasks.reporting.kpis.metrics import METRICS, Metric
from tasks.reporting.kpis.periods import month_bounds
from tasks.reporting.kpis.quality import INCIDENT_WINDOW, RED_FLAG_LABELS, red_flags
from tasks.reporting.kpis.speed import stage_aging
from tasks.reporting.kpis.table import Context, kpi_table, monthly_series, prepare, weekly_series
from tasks.reporting.kpis.triggers import Breach, Signal, capacity_signals, evaluate_thresholds

SERIES_WEEKS = 10
MEMO_MONTHS = 6
ACTION_DUE_BUSINESS_DAYS = 5
HEADLINE = ("handoffs", "median_close_to_kickoff_days", "median_kickoff_to_ready_days",
            "sla_adherence", "handoff_rework_rate", "first_30_day_incidents",
            "founder_interruptions_per_week")


def context_for(session: Session, playbook: Playbook, as_of: dt.datetime) -> Context:
    """Load every KPI frame once (one query per table) and prepare it."""
    frames = load_frames(session.connection(), as_of)
    return prepare(frames, playbook, calendar_for(playbook))


def _local(playbook: Playbook, at: Any) -> str:
    if at is None or (isinstance(at, float) and math.isnan(at)) or pd.isna(at):
        return "-"
    return pd.Timestamp(at).tz_convert(playbook.calendar.timezone).strftime("%a %d %b")


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows (ISO dates, NaN as null) for Prefect table artifacts and templates."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))  # type: ignore[no-any-return]


def iso_week(playbook: Playbook, at: dt.datetime) -> str:
    """'2026-W45' of the business timezone."""
    return at.astimezone(playbook.calendar.tz).strftime("%G-W%V")


# -- corrective actions --------------------------------------------------------------------


def record_actions(session: Session, playbook: Playbook, breaches: list[Breach],
                   as_of: dt.datetime) -> list[int]:
    """One corrective action per breached threshold per ISO week; returns ids created now."""
    week = iso_week(playbook, as_of)
    calendar = calendar_for(playbook)
    due = calendar.add_business_days(calendar.next_open(as_of), ACTION_DUE_BUSINESS_DAYS)
    created = []
    for breach in breaches:
        lane = playbook.lanes[breach.owner_lane]
        action_id = records.open_action(
            session, source_key=f"{breach.key}:{week}", title=breach.title,
            owner=str(lane.owner), lane=breach.owner_lane,
            due=due.astimezone(playbook.calendar.tz).date(), at=as_of)
        if action_id is not None:
            created.append(action_id)
    return created


def open_actions(session: Session, playbook: Playbook, as_of: dt.datetime) -> pd.DataFrame:
    """Corrective actions still open, by owner, oldest first, with overdue flagged."""
    rows = session.execute(select(
        CorrectiveAction.id, CorrectiveAction.title, CorrectiveAction.owner_email,
        CorrectiveAction.lane, CorrectiveAction.due, CorrectiveAction.created_at,
    ).where(CorrectiveAction.closed_at.is_(None), CorrectiveAction.created_at <= as_of)
        .order_by(CorrectiveAction.owner_email, CorrectiveAction.created_at)).all()
    today = as_of.astimezone(playbook.calendar.tz).date()
    return pd.DataFrame([{"id": r.id, "owner": r.owner_email, "lane": r.lane, "title": r.title,
                          "due": r.due.isoformat(), "overdue": r.due < today} for r in rows],
                        columns=["id", "owner", "lane", "title", "due", "overdue"])


# -- the weekly review ---------------------------------------------------------------------


def risk_forecast(ctx: Context, playbook: Playbook, as_of: dt.datetime) -> pd.DataFrame:
    """Active clients likely to breach an SLA next week, from their clocks."""
    calendar = ctx.calendar
    horizon = pd.Timestamp(calendar.add_business_days(as_of, 5))
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
                         "due": _local(playbook, due), "_at": due})
        if pd.notna(r.kickoff_by) and pd.isna(r.kickoff_at):
            window_end = pd.Timestamp(kickoff_window_end(playbook, r.kickoff_by))
            if window_end <= horizon and stage.key in STAGE_ORDER[:3]:
                rows.append({"id": r.id, "client": r.client_name, "stage": stage.name,
                             "owner": r.owner_email,
                             "risk": f"kickoff committed by {r.kickoff_by} not held",
                             "due": _local(playbook, window_end), "_at": window_end})
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
                     "due": _local(playbook, b.opened_at), "_at": b.opened_at})
    frame = pd.DataFrame(rows, columns=["id", "client", "stage", "owner", "risk", "due", "_at"])
    return frame.sort_values("_at").drop(columns="_at").reset_index(drop=True)


def audit_answers(ctx: Context, playbook: Playbook, start: pd.Timestamp,
                  end: pd.Timestamp) -> list[dict[str, str]]:
    """The seed's six weekly audit questions, answered from the week's data, each with an owner."""
    f, cal = ctx.frames, ctx.calendar
    lanes = playbook.lanes
    prev = start - pd.Timedelta(days=7)
    answers = []

    this = stage_aging(f.onboardings, ctx.stays, cal, start, end).set_index("stage")
    before = stage_aging(f.onboardings, ctx.stays, cal, prev, start).set_index("stage")
    change = (this["median_days"] - before["median_days"]).dropna()
    if len(change) and change.max() > 0:
        stage = str(change.idxmax())
        answer = (f"{playbook.stage(stage).name}: {this.loc[stage, 'median_days']:.1f} business "
                  f"days median, up {change.max():.1f} on last week")
        owner = lanes[playbook.stage(stage).lane].owner
    else:
        stage_now = this["median_age_now"].dropna()
        answer = "no stage aged more than last week" if not len(stage_now) else (
            f"no stage aged more than last week; oldest now: "
            f"{playbook.stage(str(stage_now.idxmax())).name}")
        owner = lanes["A"].owner
    answers.append({"question": "Which stage had the highest aging increase this week?",
                    "answer": answer, "owner": str(owner)})

    table = blockers_by_type(f.blockers, cal, start, end)
    table = table[table["opened"] > 0]
    if len(table):
        top = table.iloc[0]
        kind = playbook.blockers.get(str(top["type"]))
        answers.append({"question": "Which blocker type appeared most often?",
                        "answer": f"{kind.label if kind else top['type']}: {top['opened']} opened",
                        "owner": str(lanes[kind.lane if kind else 'B'].owner)})
    else:
        answers.append({"question": "Which blocker type appeared most often?",
                        "answer": "no blockers opened this week", "owner": str(lanes["B"].owner)})

    month = start - pd.Timedelta(days=21)
    asks = f.responses[(f.responses["kind"] == "clarification") & (f.responses["at"] >= month)
                       & (f.responses["at"] < end)]
    counts = asks["template"].dropna().value_counts()
    answers.append({
        "question": "Which template generated the most client clarification requests?",
        "answer": (f"{counts.index[0]}: {counts.iloc[0]} clarification requests in 4 weeks"
                   if len(counts) else "no clarification requests in 4 weeks"),
        "owner": str(lanes[catalog()[str(counts.index[0])].lane if len(counts)
                           and str(counts.index[0]) in catalog() else "C"].owner)})

    missing = missing_at_handoff_qa(f.onboardings, f.artifacts, f.qa_reviews, ctx.items,
                                         month, end)
    missed = missing[missing["missing"]]["key"].value_counts()
    if len(missed):
        _stage, item = playbook.item(str(missed.index[0]))
        answer = f"{item.label}: missing at {missed.iloc[0]} handoff QA checks in 4 weeks"
        owner = lanes[item.lane].owner
    else:
        answer, owner = "none missing at handoff QA in 4 weeks", lanes["D"].owner
    answers.append({"question": "Which handoff artifacts were most frequently missing?",
                    "answer": answer, "owner": str(owner)})

    founder = str(playbook.business.founder.email)
    comms = f.communications
    escalated = comms[(comms["recipients"] == founder) & (comms["audience"] == "team")
                      & comms["sent_at"].between(start, end, inclusive="left")]
    by_template = escalated["template"].value_counts()
    if len(by_template):
        template = str(by_template.index[0])
        kind_key = template.removeprefix("blocker_")
        label = playbook.blockers[kind_key].label if kind_key in playbook.blockers else template
        lane = playbook.blockers[kind_key].lane if kind_key in playbook.blockers else "C"
        answer = f"{label}: {by_template.iloc[0]} escalations reached the founder"
    else:
        escalations = f.interruptions[(f.interruptions["category"] == "client_escalation")
                                      & f.interruptions["at"].between(start, end,
                                                                      inclusive="left")]
        answer = (f"client escalations: {len(escalations)} founder interruptions"
                  if len(escalations) else "no escalation reached the founder")
        lane = "C"
    answers.append({"question": "Which escalation consumed the most leadership time?",
                    "answer": answer, "owner": str(lanes[lane].owner)})

    week = f.interruptions[f.interruptions["at"].between(start, end, inclusive="left")]
    by_lane = week["lane"].dropna().value_counts()
    if len(by_lane):
        lane = str(by_lane.index[0])
        avoidable = int(week[week["lane"] == lane]["avoidable"].astype(bool).sum())
        answer = (f"lane {lane} ({lanes[lane].name}): {by_lane.iloc[0]} interruptions, "
                  f"{avoidable} avoidable")
    else:
        lane, answer = "C", "no founder interruptions this week"
    answers.append({"question": "Which onboarding lane created the most founder interruptions?",
                    "answer": answer, "owner": str(lanes[lane].owner)})
    return answers


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


# -- the monthly memo ----------------------------------------------------------------------


def previous_month(now: dt.datetime, playbook: Playbook) -> str:
    """'YYYY-MM' of the last complete month in the business timezone."""
    local = now.astimezone(playbook.calendar.tz).date().replace(day=1) - dt.timedelta(days=1)
    return local.strftime("%Y-%m")


def parse_month(value: str) -> str:
    """Validate 'YYYY-MM'."""
    try:
        return dt.datetime.strptime(value.strip(), "%Y-%m").strftime("%Y-%m")
    except ValueError:
        raise HandoffError(f"--month {value!r} is not a month like 2026-10") from None


@dataclass
class Memo:
    """One page for the founder, its charts, and the KPI table."""

    month: str
    context: dict[str, Any]
    charts: dict[str, bytes]  # the charts with something to draw, by name (CHART_TITLES)
    table: pd.DataFrame  # the KPIs by scope (all, each segment, each offer), rounded

    @property
    def csv(self) -> bytes:
        """The KPI table as the CSV the founder gets attached."""
        return self.table.to_csv(index=False).encode()


def _change(metric: Metric, now: float, before: float) -> float | None:
    """Signed improvement (positive = better), relative for counts and days, points for pct."""
    if math.isnan(now) or math.isnan(before):
        return None
    delta = now - before if metric.unit == "pct" else (
        (now - before) / before if before else (1.0 if now > 0 else 0.0))
    return delta if metric.better == "up" else -delta


def _sentence(metric: Metric, now: float, before: float) -> str:
    verb = "rose" if now > before else "fell"
    return f"{metric.label.capitalize()} {verb} from {metric.format(before)} to " \
           f"{metric.format(now)}."


def build_memo(session: Session, playbook: Playbook, month: str,
               as_of: dt.datetime | None = None) -> Memo:
    """The one-page monthly memo for 'YYYY-MM' (data as of the month's end unless given)."""
    tz = playbook.calendar.timezone
    start, end = month_bounds(month, tz)
    as_of = as_of or end.to_pydatetime()
    ctx = context_for(session, playbook, as_of)
    series = monthly_series(ctx, month, MEMO_MONTHS)
    now, before = series.iloc[-1], series.iloc[-2]
    prev_start = series["start"].iloc[-2]

    tiles: list[dict[str, str]] = []
    improved: list[tuple[float, str, str]] = []
    worse: list[tuple[float, str, str]] = []
    for key in HEADLINE:
        metric = METRICS[key]
        change = _change(metric, float(now[key]), float(before[key]))
        tiles.append({"label": metric.label, "value": metric.format(now[key]),
                      "before": metric.format(before[key]),
                      "trend": "flat" if change is None or abs(change) < 0.03 else (
                          "better" if change > 0 else "worse")})
        if key == "handoffs" or change is None or abs(change) < 0.03:
            continue
        (improved if change > 0 else worse).append((change, _sentence(
            metric, float(now[key]), float(before[key])), key))
    improved.sort(reverse=True)
    worse.sort()

    aging_now = stage_aging(ctx.frames.onboardings, ctx.stays, ctx.calendar, start, end)
    aging_before = stage_aging(ctx.frames.onboardings, ctx.stays, ctx.calendar,
                                    prev_start, start)
    sla_days = {s.key: in_business_days(playbook, s.sla.within, s.sla.unit)
                for s in playbook.stages}
    over = aging_now.assign(sla=aging_now["stage"].map(sla_days))
    over = over[over["median_days"] > over["sla"]].sort_values("median_days", ascending=False)
    persists = [f"{playbook.stage(r.stage).name} takes {r.median_days:.1f} business days "
                f"(median) against a {r.sla:g}-day SLA." for r in over.itertuples()][:2]
    persists += [text for _c, text, _k in worse][:3]

    blockers = blockers_by_type(ctx.frames.blockers, ctx.calendar, start, end)
    root = None
    if len(blockers) and blockers["blocked_days"].sum() > 0:
        top = blockers.sort_values("blocked_days", ascending=False).iloc[0]
        share = top["blocked_days"] / blockers["blocked_days"].sum()
        kind = playbook.blockers.get(str(top["type"]))
        root = {"label": kind.label if kind else str(top["type"]), "opened": int(top["opened"]),
                "days": f"{top['blocked_days']:.0f}", "share": f"{share * 100:.0f}%",
                "lane": kind.lane if kind else "B"}

    actions = ctx.frames.actions
    closed = actions[actions["closed_at"].between(start, end, inclusive="left")]
    fixes = [{"title": r.title, "note": r.close_note, "owner": r.owner_email}
             for r in closed.itertuples()]
    still_open = actions[actions["closed_at"].isna()].sort_values("created_at")
    priorities: list[str] = [f"{r.title} (owner {r.owner_email}, due {r.due})"
                             for r in still_open.itertuples()][:3]
    by_metric = {t.metric: t.action for t in playbook.kpi_thresholds}
    for _change_value, _text, key in worse:
        if len(priorities) >= 3:
            break
        if key in by_metric and not any(by_metric[key].lower() in p.lower()
                                         for p in priorities):
            priorities.append(f"{by_metric[key]} ({METRICS[key].label} got worse)")
    if root and len(priorities) < 3:
        priorities.append(f"Attack the top root cause: {str(root['label']).lower()} "
                          f"(lane {root['lane']}).")

    weekly = weekly_series(ctx, end, SERIES_WEEKS)
    signals = capacity_signals(ctx, playbook, weekly, end)
    audits = ctx.frames.audits[ctx.frames.audits["at"].between(start, end, inclusive="left")]
    audit = None
    if len(audits):
        met = audits["first_milestone_met"].dropna()
        audit = {"count": len(audits),
                 "milestone": f"{met.astype(bool).mean() * 100:.0f}%" if len(met) else "n/a",
                 "churn": int(audits["churn_risk"].astype(bool).sum()),
                 "incidents": int(audits["incidents"].sum())}

    headline = _headline(improved, worse, now)
    month_label = pd.Period(month, freq="M").strftime("%B %Y")
    context = {
        "business": business_context(playbook),
        "memo": {
            "month": month, "month_label": month_label, "headline": headline,
            "tiles": tiles,
            "improved": [t for _c, t, _k in improved][:3] or ["Nothing moved enough to call."],
            "persists": persists or ["No stage is running over its SLA."],
            "root_cause": root, "fixes": fixes, "priorities": priorities,
            "signals": [{"text": s.text, "lane": s.lane,
                         "lane_name": playbook.lanes[s.lane].name} for s in signals],
            "audit": audit, "handoffs": int(now["handoffs"]),
            "replies": client_replies(ctx, start, end, playbook),
        },
    }
    drawn = {
        "kpi_trends": charts.kpi_trends(series),
        "stage_aging": charts.stage_aging(
            aging_now.set_index("stage")["median_days"].rename(
                lambda s: playbook.stage(s).name),
            aging_before.set_index("stage")["median_days"].rename(
                lambda s: playbook.stage(s).name),
            pd.Series({playbook.stage(k).name: v for k, v in sla_days.items()})),
        "blockers": charts.blockers_by_type(
            blockers.assign(type=blockers["type"].map(
                lambda t: playbook.blockers[t].label if t in playbook.blockers else t))),
    }
    png = {name: image for name, image in drawn.items() if image is not None}
    return Memo(month=month, context=context, charts=png,
                table=kpi_table(ctx, start, end).round(4))


def _headline(improved: list[tuple[float, str, str]], worse: list[tuple[float, str, str]],
              now: pd.Series) -> str:
    handed = int(now["handoffs"])
    if worse and (not improved or abs(worse[0][0]) > improved[0][0]):
        key = worse[0][2]
        return f"{handed} handed off; {METRICS[key].label} slipped to " \
               f"{METRICS[key].format(now[key])}"
    if improved:
        key = improved[0][2]
        return f"{handed} handed off; {METRICS[key].label} improved to " \
               f"{METRICS[key].format(now[key])}"
    return f"{handed} handed off; a steady month"


CHART_TITLES = {"kpi_trends": "KPI trends, last six months", "stage_aging": "Stage aging",
                "blockers": "Blockers by type"}


def memo_context(memo: Memo, *, inline: bool) -> dict[str, Any]:
    """The memo's template context; charts point at cid: parts (mail) or PNG files (disk).

    Every chart is listed; one with nothing to draw has no src, and the template says why."""
    chart_list = [{"name": name, "title": title,
                   "src": (f"cid:{name}" if inline else f"{name}.png")
                   if name in memo.charts else None}
                  for name, title in CHART_TITLES.items()]
    return {**memo.context, "charts": chart_list}


def write_memo_files(memo: Memo, directory: Path) -> Path:
    """memo-YYYY-MM/: memo.html, memo.txt, the PNG charts and kpis.csv; returns the HTML path."""
    target = directory / f"memo-{memo.month}"
    target.mkdir(parents=True, exist_ok=True)
    rendered = render_message("monthly_memo", memo_context(memo, inline=False))
    (target / "memo.html").write_text(rendered.html, encoding="utf-8")
    (target / "memo.txt").write_text(rendered.text, encoding="utf-8")
    for name, png in memo.charts.items():
        (target / f"{name}.png").write_bytes(png)
    (target / f"kpis-{memo.month}.csv").write_bytes(memo.csv)
    return target / "memo.html"


def queue_memo_email(session: Session, playbook: Playbook, memo: Memo,
                     now: dt.datetime) -> bool:
    """Queue the memo with inline charts and the CSV, once per month (key memo:YYYY-MM)."""
    attachments = tuple(Attachment(filename=f"{name}.png", content=png, mimetype="image/png",
                                   inline_cid=name) for name, png in memo.charts.items())
    attachments += (Attachment(filename=f"kpis-{memo.month}.csv", content=memo.csv,
                               mimetype="text/csv"),)
    _row, created = enqueue(session, playbook, Draft(
        onboarding_id=None, template="monthly_memo",
        recipients=[str(playbook.business.founder.email)], key=keys.monthly_memo(memo.month),
        context=memo_context(memo, inline=True), attachments=attachments), now=now)
    return created


# -- the quarterly reset -------------------------------------------------------------------


def quarter_of(at: dt.datetime, playbook: Playbook) -> str:
    """'2026-Q3' of the last complete quarter before `at`."""
    local = at.astimezone(playbook.calendar.tz)
    period = pd.Period(local.strftime("%Y-%m"), freq="M").asfreq("Q") - 1
    return str(period)


def build_quarterly_reset(session: Session, playbook: Playbook, quarter: str) -> dict[str, Any]:
    """The seed's quarterly reset checklist, each item with the data behind it."""
    period = pd.Period(quarter, freq="Q")
    tz = playbook.calendar.timezone
    start, _ = month_bounds(period.asfreq("M", "start").strftime("%Y-%m"), tz)
    _, end = month_bounds(period.asfreq("M", "end").strftime("%Y-%m"), tz)
    ctx = context_for(session, playbook, end.to_pydatetime())
    f = ctx.frames
    aging = stage_aging(f.onboardings, ctx.stays, ctx.calendar, start, end)
    versions = f.onboardings[f.onboardings["closed_at"].between(start, end, inclusive="left")]
    stage_items = []
    for r in aging.itertuples():
        sla = playbook.stage(r.stage).sla
        within = in_business_days(playbook, sla.within, sla.unit)
        state = "over" if r.median_days > within else "within"
        stage_items.append(f"{playbook.stage(r.stage).name}: {r.median_days:.1f} d median, "
                           f"{state} its {within:g}-day SLA")
    changed = sorted(versions["playbook_version"].dropna().unique())
    sent = f.communications[f.communications["sent_at"].between(start, end, inclusive="left")]
    used = set(sent["template"])
    unused = sorted(name for name, spec in catalog().items()
                    if spec.audience == "client" and name not in used)
    clar = f.responses[(f.responses["kind"] == "clarification")
                       & f.responses["at"].between(start, end, inclusive="left")]
    most = clar["template"].dropna().value_counts().head(3)
    weeks = max(int((end - start) / pd.Timedelta(days=7)), 1)
    series = weekly_series(ctx, end, weeks + 4)
    breached: dict[str, int] = {t.key: 0 for t in playbook.kpi_thresholds}
    for i in range(4, len(series) + 1):
        for b in evaluate_thresholds(playbook, series.iloc[:i]):
            breached[b.key] += 1
    window = len(series) - 3
    never = [k for k, n in breached.items() if n == 0]
    always = [k for k, n in breached.items() if n >= window]
    actions = f.actions[f.actions["created_at"].between(start, end, inclusive="left")]
    ignored = actions[actions["closed_at"].isna()]
    escalations = sent[sent["template"].isin(["threshold_escalation"])
                       | sent["template"].str.startswith("blocker_")]
    per_lane = escalations["lane"].value_counts()
    packets = f.packets[f.packets["created_at"].between(start, end, inclusive="left")]
    revised = packets.groupby("onboarding_id")["revision"].max()
    missing = missing_at_handoff_qa(f.onboardings, f.artifacts, f.qa_reviews, ctx.items,
                                         start, end)
    missed = missing[missing["missing"]]["key"].value_counts().head(3)
    items = [
        {"title": "Revalidate stage definitions", "data": stage_items + [
            f"playbook versions used by deals closed this quarter: "
            f"{', '.join(changed) or 'none'} (current {playbook.version})"]},
        {"title": "Archive outdated templates", "data": [
            f"client templates unused this quarter: {', '.join(unused) or 'none'}",
            "most clarification requests: " + (", ".join(
                f"{t} ({n})" for t, n in most.items()) or "none")]},
        {"title": "Retrain owners on escalation thresholds", "data": [
            f"escalations sent this quarter: {len(escalations)}"] + [
            f"lane {lane} ({playbook.lanes[str(lane)].name}): {n}"
            for lane, n in per_lane.items() if str(lane) in playbook.lanes]},
        {"title": "Review KPI thresholds against current volume", "data": [
            f"never breached: {', '.join(never) or 'none'}",
            f"breached every week: {', '.join(always) or 'none'}",
            f"clients closed this quarter: {len(versions)}"]},
        {"title": "Retire low-value metrics", "data": [
            f"corrective actions raised this quarter: {len(actions)}, still open: "
            f"{len(ignored)}"] + [f"not acted on: {t}" for t in ignored["title"].head(3)]},
        {"title": "Update onboarding packet standards", "data": [
            f"packets needing several revisions: {int((revised > 1).sum())} of {len(revised)}",
            "most missing at handoff QA: " + (", ".join(
                f"{k.replace('_', ' ')} ({n})" for k, n in missed.items()) or "none")]},
    ]
    return {"business": business_context(playbook),
            "reset": {"quarter": quarter, "items": items}}


def queue_quarterly_email(session: Session, playbook: Playbook, context: dict[str, Any],
                          now: dt.datetime) -> bool:
    """Queue the quarterly reset checklist to the founder, once per quarter."""
    _row, created = enqueue(session, playbook, Draft(
        onboarding_id=None, template="quarterly_reset",
        recipients=[str(playbook.business.founder.email)],
        key=keys.quarterly_reset(context["reset"]["quarter"]), context=context), now=now)
    return created


# -- the 30-day post-onboarding audit ------------------------------------------------------


def audit_findings(ctx: Context, as_of: pd.Timestamp) -> pd.DataFrame:
    """Clients 30+ days past handoff without an audit: milestone, incidents, churn signals."""
    f = ctx.frames
    ob = f.onboardings
    due = ob[ob["ready_at"].notna() & (ob["ready_at"] + INCIDENT_WINDOW <= as_of)
             & ~ob["id"].isin(f.audits["onboarding_id"])]
    if due.empty:
        return pd.DataFrame(columns=["onboarding_id", "first_milestone_met", "incidents",
                                     "churn_risk", "notes"])
    incidents = f.incidents.merge(due[["id", "ready_at", "first_milestone"]],
                                  left_on="onboarding_id", right_on="id")
    incidents = incidents[(incidents["at"] >= incidents["ready_at"])
                          & (incidents["at"] <= incidents["ready_at"] + INCIDENT_WINDOW)]
    count = incidents.groupby("onboarding_id").size()
    serious = incidents[incidents["severity"].isin(["major", "critical"])]
    milestone = pd.to_datetime(serious["first_milestone"]).dt.tz_localize("UTC")
    missed = serious[serious["at"] <= milestone + pd.Timedelta(days=1)]["onboarding_id"]
    asks = f.responses[(f.responses["kind"] == "followup_request")].merge(
        due[["id", "ready_at"]], left_on="onboarding_id", right_on="id")
    asks_after = asks[asks["at"] > asks["ready_at"]].groupby("onboarding_id").size()
    flags = red_flags(f, ctx.calendar, ctx.cadence_days,
                           pd.Timestamp("1970-01-01", tz="UTC"), as_of).set_index(
        "onboarding_id")["flags"]
    had_serious, missed_ids = set(serious["onboarding_id"]), set(missed)
    rows = []
    for r in due.itertuples():
        n = int(count.get(r.id, 0))
        red = int(flags.get(r.id, 0))
        reasons = []
        if n >= 2:
            reasons.append(f"{n} incidents in 30 days")
        if r.id in had_serious:
            reasons.append("a major or critical incident")
        if int(asks_after.get(r.id, 0)):
            reasons.append("client still chasing status after handoff")
        if red >= 2:
            reasons.append(f"{red} red flags during onboarding")
        met = None if pd.isna(r.first_milestone) else r.id not in missed_ids
        rows.append({"onboarding_id": int(r.id), "first_milestone_met": met, "incidents": n,
                     "churn_risk": bool(reasons),
                     "notes": "; ".join(reasons) or "clean first 30 days"})
    return pd.DataFrame(rows)


def record_audits(session: Session, playbook: Playbook, as_of: dt.datetime) -> int:
    """Record the 30-day audit of every client due one; returns how many were recorded."""
    ctx = context_for(session, playbook, as_of)
    findings = audit_findings(ctx, pd.Timestamp(as_of))
    recorded = 0
    for row in findings.to_dict("records"):
        met = row["first_milestone_met"]
        recorded += records.record_audit(
            session, onboarding_id=int(row["onboarding_id"]), at=as_of,
            first_milestone_met=None if met is None or pd.isna(met) else bool(met),
            incidents=int(row["incidents"]), churn_risk=bool(row["churn_risk"]),
            notes=str(row["notes"]))
    if recorded:
        log_event(session, "audits_recorded", actor="handoff", at=as_of, count=recorded)
    return recorded


# -- Prefect tasks (what flows/reports.py orchestrates) ------------------------------------


@task(name="compile weekly review", cache_policy=NO_CACHE)
def compile_weekly_review(as_of: str | None = None) -> dict[str, Any]:
    """Evaluate thresholds, record corrective actions, queue the founder's review e-mail."""
    from db.playbook import get_playbook
    from db.session import transaction

    playbook, at = get_playbook(), parse_as_of(as_of)
    with transaction() as session:
        review = build_weekly_review(session, playbook, at)
        queued = queue_weekly_email(session, playbook, review, at)
    return {"week": review.week, "markdown": review.markdown, "queued": queued,
            "actions_created": review.actions_created,
            "breaches": [b.title for b in review.breaches],
            "tables": {"stage-aging": records_of(review.stage_aging),
                       "blockers": records_of(review.blockers),
                       "corrective-actions": records_of(review.actions),
                       "risk-forecast": records_of(review.risks),
                       "kpis": records_of(review.kpis)}}


@task(name="publish report artifacts", cache_policy=NO_CACHE)
def publish_artifacts(prefix: str, markdown: str, tables: dict[str, list[dict[str, Any]]],
                      description: str) -> None:
    """A markdown artifact and one table artifact per table, keyed for the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown=markdown, key=prefix, description=description)
    for name, rows in tables.items():
        create_table_artifact(table=rows, key=f"{prefix}-{name}",
                              description=f"{description}: {name.replace('-', ' ')}")


def deliver_due(now: dt.datetime) -> DeliveryReport:
    """Send what the outbox holds that is due (a report just queued, among others); a report
    dated in the past still goes out now."""
    from db.playbook import get_playbook
    from db.session import session_factory
    from db.settings import get_settings
    from tasks.mail.delivery import deliver

    return deliver(session_factory(), get_playbook(), get_settings(),
                   now=max(now, dt.datetime.now(dt.UTC)))


@task(name="deliver founder mail", cache_policy=NO_CACHE)
def deliver_outbox(as_of: str | None = None) -> dict[str, int]:
    """Send what the outbox holds that is due (the report just queued, among others)."""
    report = deliver_due(parse_as_of(as_of))
    return {"sent": report.sent, "retried": report.retried, "failed": report.failed}


@task(name="compile monthly memo", cache_policy=NO_CACHE)
def compile_monthly_memo(month: str | None = None, as_of: str | None = None) -> dict[str, Any]:
    """Build the memo for the month (default: last month) and queue it once (memo:YYYY-MM)."""
    from db.playbook import get_playbook
    from db.session import transaction

    playbook, at = get_playbook(), parse_as_of(as_of)
    month = parse_month(month) if month else previous_month(at, playbook)
    with transaction() as session:
        memo = build_memo(session, playbook, month)
        queued = queue_memo_email(session, playbook, memo, at)
    rendered = render_message("monthly_memo", memo_context(memo, inline=False))
    return {"month": month, "queued": queued, "markdown": _memo_markdown(memo),
            "subject": rendered.subject, "tables": {"kpis": records_of(memo.table)}}


def _memo_markdown(memo: Memo) -> str:
    m = memo.context["memo"]
    lines = [f"# Onboarding memo — {m['month_label']}", "", f"**{m['headline']}**", "",
             "| KPI | this month | last month |", "|---|---|---|"]
    lines += [f"| {t['label']} | {t['value']} | {t['before']} |" for t in m["tiles"]]
    for title, entries in (("What improved", m["improved"]), ("Where delays persist",
                                                              m["persists"]),
                           ("Next month's priorities", m["priorities"])):
        lines += ["", f"## {title}", *[f"- {e}" for e in entries]]
    return "\n".join(lines)


@task(name="compile quarterly reset", cache_policy=NO_CACHE)
def compile_quarterly_reset(quarter: str | None = None,
                            as_of: str | None = None) -> dict[str, Any]:
    """Build the quarterly reset checklist and queue it once per quarter."""
    from db.playbook import get_playbook
    from db.session import transaction

    playbook, at = get_playbook(), parse_as_of(as_of)
    quarter = quarter or quarter_of(at, playbook)
    with transaction() as session:
        context = build_quarterly_reset(session, playbook, quarter)
        queued = queue_quarterly_email(session, playbook, context, at)
    markdown = "\n".join([f"# Quarterly reset — {quarter}"] + [
        f"\n## {item['title']}\n" + "\n".join(f"- {d}" for d in item["data"])
        for item in context["reset"]["items"]])
    return {"quarter": quarter, "queued": queued, "markdown": markdown}


@task(name="record 30-day audits", cache_policy=NO_CACHE)
def run_post_onboarding_audit(as_of: str | None = None) -> int:
    """Audit every client 30 days past handoff that has no audit yet."""
    from db.playbook import get_playbook
    from db.session import transaction

    playbook, at = get_playbook(), parse_as_of(as_of)
    with transaction() as session:
        return record_audits(session, playbook, at)
