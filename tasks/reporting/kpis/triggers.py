"""What the weekly series sets off: thresholds broken, and the blueprint's capacity signals."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from db.playbook import Playbook
from tasks.reporting.kpis.blockers import blockers_by_type, median_resolution_days
from tasks.reporting.kpis.communication import (
    sla_misses_by_key,
)
from tasks.reporting.kpis.metrics import METRICS
from tasks.reporting.kpis.periods import in_period
from tasks.reporting.kpis.table import Context

DEPENDENCY_BLOCKERS = ("missing_access", "internal_dependency_delay", "approval_delay")

@dataclass(frozen=True)
class Breach:
    """A KPI threshold broken this week: which one, by how much, and what to do."""

    key: str
    metric: str
    value: float
    limit: float
    title: str
    action: str
    owner_lane: str


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def evaluate_thresholds(playbook: Playbook, series: pd.DataFrame,
                        baseline_weeks: int = 4) -> list[Breach]:
    """Which playbook thresholds the weekly series (oldest first, last row = last week) breaks.

    above: last week's value > value. rising N: strictly rising over the last N weeks
    (N+1 values). rising_while: rising, and the other metric's last value >= other_at_least.
    rise_pct N: each of the last N weeks > (1 + pct) x the mean of the weeks before them.
    """
    breaches = []
    for threshold in playbook.kpi_thresholds:
        rule, metric = threshold.rule, METRICS[threshold.metric]
        values = series[threshold.metric].astype(float)
        weeks = rule.weeks or 1
        fmt = metric.format
        title: str | None = None
        value = limit = math.nan
        if rule.kind == "above" and len(values) and rule.value is not None:
            value, limit = float(values.iloc[-1]), rule.value
            if value > limit:
                title = f"{metric.label} {fmt(value)} > {fmt(limit)}"
        elif rule.kind in ("rising", "rising_while") and len(values) > weeks:
            window = values.iloc[-(weeks + 1):]
            value, limit = float(window.iloc[-1]), float(window.iloc[0])
            rising = bool(window.notna().all() and (window.diff().iloc[1:] > 0).all())
            if rising and rule.kind == "rising_while":
                other = series[rule.other_metric].astype(float).iloc[-1]
                rising = bool(not math.isnan(other) and other >= (rule.other_at_least or 0))
                trail = " → ".join(fmt(v) for v in window)
                title = (f"{metric.label} rising {weeks} weeks ({trail}) while "
                         f"{METRICS[rule.other_metric or ''].label} is "
                         f"{METRICS[rule.other_metric or ''].format(other)}") if rising else None
            elif rising:
                trail = " → ".join(fmt(v) for v in window)
                title = f"{metric.label} rising {weeks} weeks ({trail})"
        elif rule.kind == "rise_pct" and len(values) > weeks:
            recent = values.iloc[-weeks:]
            before = values.iloc[:-weeks].iloc[-baseline_weeks:].dropna()
            if len(before) and recent.notna().all():
                baseline = float(before.mean())
                limit = baseline * (1 + (rule.pct or 0) / 100)
                value = float(recent.iloc[-1])
                if baseline > 0 and (recent > limit).all():
                    rise = (value / baseline - 1) * 100
                    title = (f"{metric.label} {fmt(value)}, up {rise:.0f}% on the "
                             f"{fmt(baseline)} baseline (over +{rule.pct:g}% for {weeks} weeks)")
        if title:
            breaches.append(Breach(
                key=threshold.key, metric=threshold.metric, value=value, limit=limit,
                title=f"{title}: {_lower_first(threshold.action)}", action=threshold.action,
                owner_lane=threshold.owner_lane))
    return breaches


@dataclass(frozen=True)
class Signal:
    """A scale trigger from the blueprint, with the evidence and the lane it points at."""

    key: str
    lane: str
    text: str


def capacity_signals(ctx: Context, playbook: Playbook, series: pd.DataFrame,
                     as_of: pd.Timestamp,
                     max_dependency_heavy: int = 4) -> list[Signal]:
    """The blueprint's scale triggers that hold now, each naming the lane it points at."""
    f, signals = ctx.frames, []
    sla = series["sla_adherence"].astype(float)
    last3 = sla.iloc[-3:]
    if len(last3) == 3 and (last3 < 0.9).all():
        start = series["start"].iloc[-3]
        misses = sla_misses_by_key(f.communications, start, series["end"].iloc[-1])
        worst = str(misses.index[0]) if len(misses) else None
        lane = playbook.slas[worst].lane if worst in playbook.slas else "C"
        signals.append(Signal("sla_misses_persist", lane,
                              f"SLA adherence under 90% three weeks running "
                              f"({', '.join(f'{v * 100:.0f}%' for v in last3)}); most misses: "
                              f"{(worst or 'n/a').replace('_', ' ')}"))
    end = series["end"].iloc[-1]
    recent = median_resolution_days(f.blockers, ctx.calendar, end - pd.Timedelta(days=14), end)
    earlier = median_resolution_days(f.blockers, ctx.calendar, end - pd.Timedelta(days=42),
                                     end - pd.Timedelta(days=14))
    if not math.isnan(recent) and not math.isnan(earlier) and recent > earlier * 1.2:
        table = blockers_by_type(f.blockers, ctx.calendar, end - pd.Timedelta(days=14), end)
        top = table.sort_values("blocked_days", ascending=False)["type"]
        kind = str(top.iloc[0]) if len(top) else ""
        lane = playbook.blockers[kind].lane if kind in playbook.blockers else "B"
        signals.append(Signal("blocker_resolution_rising", lane,
                              f"blockers take longer to resolve: {recent:.1f} business days "
                              f"(median, last 2 weeks) vs {earlier:.1f} before; most blocked "
                              f"time: {kind.replace('_', ' ')}"))
    rework = series["handoff_rework_rate"].astype(float)
    if len(rework) >= 8:
        now_q, before_q = rework.iloc[-4:].mean(), rework.iloc[-8:-4].mean()
        if now_q > before_q and now_q > 0.1:
            signals.append(Signal("handoff_quality_falling", "D",
                                  f"handoff rework {now_q * 100:.0f}% over 4 weeks, up from "
                                  f"{before_q * 100:.0f}%"))
    load = series["founder_interruptions_per_week"].astype(float)
    if len(load) >= 6:
        recent_load, low = load.iloc[-2:].mean(), load.iloc[:-2].min()
        if recent_load > low * 1.3 and recent_load > load.iloc[-6:-2].mean():
            lanes = f.interruptions[in_period(f.interruptions["at"], end - pd.Timedelta(days=14),
                                        end)]["lane"].value_counts()
            lane = str(lanes.index[0]) if len(lanes) else "C"
            signals.append(Signal("founder_interruptions_rising", lane,
                                  f"founder interruptions rising again: {recent_load:.1f}/week "
                                  f"in the last 2 weeks, low was {low:.1f}/week"))
    heavy = f.blockers[f.blockers["resolved_at"].isna()
                       & f.blockers["type"].isin(DEPENDENCY_BLOCKERS)]
    active = f.onboardings[(f.onboardings["status"] == "active") & f.onboardings["ready_at"].isna()]
    heavy = heavy[heavy["onboarding_id"].isin(active["id"])]
    per_owner = active[active["id"].isin(heavy["onboarding_id"])].groupby("owner_email").size()
    for owner, count in per_owner[per_owner > max_dependency_heavy].items():
        signals.append(Signal("owner_overloaded", "B",
                              f"{owner} carries {count} dependency-heavy onboardings "
                              f"(open access, approval or internal-dependency blockers)"))
    return signals
