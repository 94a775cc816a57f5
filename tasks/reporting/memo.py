"""The monthly memo: one page for the founder with charts and the KPI table, once a month."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from db.playbook import Playbook
from db.validation import HandoffError
from tasks.calendar.clock import in_business_days
from tasks.comms import keys
from tasks.mail.message import Attachment
from tasks.mail.outbox import Draft, business_context, enqueue
from tasks.mail.render import render_message
from tasks.reporting import charts
from tasks.reporting.kpis.blockers import blockers_by_type
from tasks.reporting.kpis.metrics import METRICS, Metric
from tasks.reporting.kpis.periods import month_bounds
from tasks.reporting.kpis.speed import stage_aging
from tasks.reporting.kpis.table import kpi_table, monthly_series, weekly_series
from tasks.reporting.kpis.triggers import capacity_signals
from tasks.reporting.shared import SERIES_WEEKS, client_replies, context_for
from tasks.risks.views import risk_counts

MEMO_MONTHS = 6


HEADLINE = ("handoffs", "median_close_to_kickoff_days", "median_kickoff_to_ready_days",
            "sla_adherence", "handoff_rework_rate", "first_30_day_incidents",
            "founder_interruptions_per_week")


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


Change = tuple[float, str, str]  # signed improvement, the sentence saying it, the KPI key


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

    tiles, improved, worse = _tiles(now, before)
    aging_now = stage_aging(ctx.frames.onboardings, ctx.stays, ctx.calendar, start, end)
    aging_before = stage_aging(ctx.frames.onboardings, ctx.stays, ctx.calendar,
                               prev_start, start)
    sla_days = {s.key: in_business_days(playbook, s.sla.within, s.sla.unit)
                for s in playbook.stages}
    persists = _over_sla(playbook, aging_now, sla_days) + [text for _c, text, _k in worse][:3]
    blockers = blockers_by_type(ctx.frames.blockers, ctx.calendar, start, end)
    root = _root_cause(playbook, blockers)
    actions = ctx.frames.actions
    closed = actions[actions["closed_at"].between(start, end, inclusive="left")]
    fixes = [{"title": r.title, "note": r.close_note, "owner": r.owner_email}
             for r in closed.itertuples()]
    signals = capacity_signals(ctx, playbook, weekly_series(ctx, end, SERIES_WEEKS), end)

    month_label = pd.Period(month, freq="M").strftime("%B %Y")
    context = {
        "business": business_context(playbook),
        "memo": {
            "month": month, "month_label": month_label,
            "headline": _headline(improved, worse, now),
            "tiles": tiles,
            "improved": [t for _c, t, _k in improved][:3] or ["Nothing moved enough to call."],
            "persists": persists or ["No stage is running over its SLA."],
            "root_cause": root, "fixes": fixes,
            "priorities": _priorities(playbook, actions, worse, root),
            "signals": [{"text": s.text, "lane": s.lane,
                         "lane_name": playbook.lanes[s.lane].name} for s in signals],
            "audit": _audit_summary(ctx.frames.audits, start, end),
            "handoffs": int(now["handoffs"]),
            "replies": client_replies(ctx, start, end, playbook),
            "risks": risk_counts(session, playbook, start.to_pydatetime(),
                                 end.to_pydatetime()),
        },
    }
    png = _charts(playbook, series, aging_now, aging_before, sla_days, blockers)
    return Memo(month=month, context=context, charts=png,
                table=kpi_table(ctx, start, end).round(4))


def _tiles(now: pd.Series, before: pd.Series) -> tuple[list[dict[str, str]], list[Change],
                                                       list[Change]]:
    """The headline KPIs this month against last, and which moved enough to call, best first."""
    tiles: list[dict[str, str]] = []
    improved: list[Change] = []
    worse: list[Change] = []
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
    return tiles, improved, worse


def _over_sla(playbook: Playbook, aging: pd.DataFrame, sla_days: dict[str, float]) -> list[str]:
    """The two stages whose median stay ran furthest over their SLA this month."""
    over = aging.assign(sla=aging["stage"].map(sla_days))
    over = over[over["median_days"] > over["sla"]].sort_values("median_days", ascending=False)
    return [f"{playbook.stage(r.stage).name} takes {r.median_days:.1f} business days "
            f"(median) against a {r.sla:g}-day SLA." for r in over.itertuples()][:2]


def _root_cause(playbook: Playbook, blockers: pd.DataFrame) -> dict[str, Any] | None:
    """The blocker type that held clients up longest this month, with its share of the time."""
    if not len(blockers) or blockers["blocked_days"].sum() <= 0:
        return None
    top = blockers.sort_values("blocked_days", ascending=False).iloc[0]
    share = top["blocked_days"] / blockers["blocked_days"].sum()
    kind = playbook.blockers.get(str(top["type"]))
    return {"label": kind.label if kind else str(top["type"]), "opened": int(top["opened"]),
            "days": f"{top['blocked_days']:.0f}", "share": f"{share * 100:.0f}%",
            "lane": kind.lane if kind else "B"}


def _priorities(playbook: Playbook, actions: pd.DataFrame, worse: list[Change],
                root: dict[str, Any] | None) -> list[str]:
    """Next month's three priorities: open corrective actions, then the playbook's action for
    each KPI that got worse, then the top root cause."""
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
    return priorities


def _audit_summary(audits: pd.DataFrame, start: pd.Timestamp,
                   end: pd.Timestamp) -> dict[str, Any] | None:
    """The month's 30-day audits in four numbers, or None when there were none."""
    audits = audits[audits["at"].between(start, end, inclusive="left")]
    if not len(audits):
        return None
    met = audits["first_milestone_met"].dropna()
    return {"count": len(audits),
            "milestone": f"{met.astype(bool).mean() * 100:.0f}%" if len(met) else "n/a",
            "churn": int(audits["churn_risk"].astype(bool).sum()),
            "incidents": int(audits["incidents"].sum())}


def _charts(playbook: Playbook, series: pd.DataFrame, aging_now: pd.DataFrame,
            aging_before: pd.DataFrame, sla_days: dict[str, float],
            blockers: pd.DataFrame) -> dict[str, bytes]:
    """The memo's PNG charts that have something to draw, stages and blockers named as the
    playbook names them."""
    def stage_name(key: str) -> str:
        return playbook.stage(key).name

    drawn = {
        "kpi_trends": charts.kpi_trends(series),
        "stage_aging": charts.stage_aging(
            aging_now.set_index("stage")["median_days"].rename(stage_name),
            aging_before.set_index("stage")["median_days"].rename(stage_name),
            pd.Series({stage_name(k): v for k, v in sla_days.items()})),
        "blockers": charts.blockers_by_type(
            blockers.assign(type=blockers["type"].map(
                lambda t: playbook.blockers[t].label if t in playbook.blockers else t))),
    }
    return {name: image for name, image in drawn.items() if image is not None}


def _headline(improved: list[Change], worse: list[Change], now: pd.Series) -> str:
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


def memo_markdown(memo: Memo) -> str:
    """The memo as markdown, for the Prefect artifact."""
    m = memo.context["memo"]
    lines = [f"# Onboarding memo — {m['month_label']}", "", f"**{m['headline']}**", "",
             "| KPI | this month | last month |", "|---|---|---|"]
    lines += [f"| {t['label']} | {t['value']} | {t['before']} |" for t in m["tiles"]]
    for title, entries in (("What improved", m["improved"]), ("Where delays persist",
                                                              m["persists"]),
                           ("Next month's priorities", m["priorities"])):
        lines += ["", f"## {title}", *[f"- {e}" for e in entries]]
    return "\n".join(lines)


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
