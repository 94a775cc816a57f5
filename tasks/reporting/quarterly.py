"""The quarterly reset: the blueprint's checklist, each item with the data behind it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from db.playbook import Playbook
from tasks.calendar.clock import in_business_days
from tasks.comms import keys
from tasks.mail.outbox import Draft, business_context, enqueue
from tasks.mail.render import catalog
from tasks.reporting.kpis.completeness import missing_at_handoff_qa
from tasks.reporting.kpis.periods import month_bounds
from tasks.reporting.kpis.speed import stage_aging
from tasks.reporting.kpis.table import Context, weekly_series
from tasks.reporting.kpis.triggers import evaluate_thresholds
from tasks.reporting.shared import context_for


def quarter_of(at: dt.datetime, playbook: Playbook) -> str:
    """'2026-Q3' of the last complete quarter before `at`."""
    local = at.astimezone(playbook.calendar.tz)
    period = pd.Period(local.strftime("%Y-%m"), freq="M").asfreq("Q") - 1
    return str(period)


Item = dict[str, Any]  # a checklist item: its title and the lines of data behind it


def build_quarterly_reset(session: Session, playbook: Playbook, quarter: str) -> dict[str, Any]:
    """The blueprint's quarterly reset checklist, each item with the data behind it."""
    period = pd.Period(quarter, freq="Q")
    tz = playbook.calendar.timezone
    start, _ = month_bounds(period.asfreq("M", "start").strftime("%Y-%m"), tz)
    _, end = month_bounds(period.asfreq("M", "end").strftime("%Y-%m"), tz)
    ctx = context_for(session, playbook, end.to_pydatetime())
    f = ctx.frames
    closed = f.onboardings[f.onboardings["closed_at"].between(start, end, inclusive="left")]
    sent = f.communications[f.communications["sent_at"].between(start, end, inclusive="left")]
    items = [_stage_definitions(ctx, playbook, start, end, closed),
             _templates(ctx, start, end, sent), _escalation_training(playbook, sent),
             _thresholds(ctx, playbook, start, end, closed), _metrics(ctx, start, end),
             _packet_standards(ctx, start, end)]
    return {"business": business_context(playbook),
            "reset": {"quarter": quarter, "items": items}}


def _stage_definitions(ctx: Context, playbook: Playbook, start: pd.Timestamp, end: pd.Timestamp,
                       closed: pd.DataFrame) -> Item:
    """Each stage's median stay against its SLA, and the playbook versions deals closed under."""
    aging = stage_aging(ctx.frames.onboardings, ctx.stays, ctx.calendar, start, end)
    lines = []
    for r in aging.itertuples():
        sla = playbook.stage(r.stage).sla
        within = in_business_days(playbook, sla.within, sla.unit)
        state = "over" if r.median_days > within else "within"
        lines.append(f"{playbook.stage(r.stage).name}: {r.median_days:.1f} d median, "
                     f"{state} its {within:g}-day SLA")
    changed = sorted(closed["playbook_version"].dropna().unique())
    return {"title": "Revalidate stage definitions", "data": lines + [
        f"playbook versions used by deals closed this quarter: "
        f"{', '.join(changed) or 'none'} (current {playbook.version})"]}


def _templates(ctx: Context, start: pd.Timestamp, end: pd.Timestamp,
               sent: pd.DataFrame) -> Item:
    """Client templates nobody was sent, and the ones that drew clarification requests."""
    used = set(sent["template"])
    unused = sorted(name for name, spec in catalog().items()
                    if spec.audience == "client" and name not in used)
    responses = ctx.frames.responses
    clar = responses[(responses["kind"] == "clarification")
                     & responses["at"].between(start, end, inclusive="left")]
    most = clar["template"].dropna().value_counts().head(3)
    return {"title": "Archive outdated templates", "data": [
        f"client templates unused this quarter: {', '.join(unused) or 'none'}",
        "most clarification requests: " + (", ".join(
            f"{t} ({n})" for t, n in most.items()) or "none")]}


def _escalation_training(playbook: Playbook, sent: pd.DataFrame) -> Item:
    """Escalations sent this quarter, per lane."""
    escalations = sent[sent["template"].isin(["threshold_escalation"])
                       | sent["template"].str.startswith("blocker_")]
    per_lane = escalations["lane"].value_counts()
    return {"title": "Retrain owners on escalation thresholds", "data": [
        f"escalations sent this quarter: {len(escalations)}"] + [
        f"lane {lane} ({playbook.lanes[str(lane)].name}): {n}"
        for lane, n in per_lane.items() if str(lane) in playbook.lanes]}


def _thresholds(ctx: Context, playbook: Playbook, start: pd.Timestamp, end: pd.Timestamp,
                closed: pd.DataFrame) -> Item:
    """Thresholds never breached and breached every week of the quarter, against volume."""
    weeks = max(int((end - start) / pd.Timedelta(days=7)), 1)
    series = weekly_series(ctx, end, weeks + 4)
    breached: dict[str, int] = {t.key: 0 for t in playbook.kpi_thresholds}
    for i in range(4, len(series) + 1):
        for b in evaluate_thresholds(playbook, series.iloc[:i]):
            breached[b.key] += 1
    window = len(series) - 3
    never = [k for k, n in breached.items() if n == 0]
    always = [k for k, n in breached.items() if n >= window]
    return {"title": "Review KPI thresholds against current volume", "data": [
        f"never breached: {', '.join(never) or 'none'}",
        f"breached every week: {', '.join(always) or 'none'}",
        f"clients closed this quarter: {len(closed)}"]}


def _metrics(ctx: Context, start: pd.Timestamp, end: pd.Timestamp) -> Item:
    """Corrective actions raised this quarter and the ones nobody acted on."""
    actions = ctx.frames.actions
    actions = actions[actions["created_at"].between(start, end, inclusive="left")]
    ignored = actions[actions["closed_at"].isna()]
    return {"title": "Retire low-value metrics", "data": [
        f"corrective actions raised this quarter: {len(actions)}, still open: "
        f"{len(ignored)}"] + [f"not acted on: {t}" for t in ignored["title"].head(3)]}


def _packet_standards(ctx: Context, start: pd.Timestamp, end: pd.Timestamp) -> Item:
    """Packets revised more than once, and what was most often missing at handoff QA."""
    f = ctx.frames
    packets = f.packets[f.packets["created_at"].between(start, end, inclusive="left")]
    revised = packets.groupby("onboarding_id")["revision"].max()
    missing = missing_at_handoff_qa(f.onboardings, f.artifacts, f.qa_reviews, ctx.items,
                                    start, end)
    missed = missing[missing["missing"]]["key"].value_counts().head(3)
    return {"title": "Update onboarding packet standards", "data": [
        f"packets needing several revisions: {int((revised > 1).sum())} of {len(revised)}",
        "most missing at handoff QA: " + (", ".join(
            f"{k.replace('_', ' ')} ({n})" for k, n in missed.items()) or "none")]}


def queue_quarterly_email(session: Session, playbook: Playbook, context: dict[str, Any],
                          now: dt.datetime) -> bool:
    """Queue the quarterly reset checklist to the founder, once per quarter."""
    _row, created = enqueue(session, playbook, Draft(
        onboarding_id=None, template="quarterly_reset",
        recipients=[str(playbook.business.founder.email)],
        key=keys.quarterly_reset(context["reset"]["quarter"]), context=context), now=now)
    return created


def reset_markdown(context: dict[str, Any]) -> str:
    """The checklist as markdown, for the Prefect artifact."""
    reset = context["reset"]
    return "\n".join([f"# Quarterly reset — {reset['quarter']}"] + [
        f"\n## {item['title']}\n" + "\n".join(f"- {d}" for d in item["data"])
        for item in reset["items"]])
