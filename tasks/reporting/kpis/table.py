"""The KPI table: frames prepared once, then every headline KPI for any period and scope."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import pandas as pd

from db.models import (
    DELIVERED,
)
from db.playbook import STAGE_ORDER, Playbook, TimeUnit
from tasks.calendar.business_time import BusinessCalendar
from tasks.reporting.kpis.communication import (
    bounce_rate,
    client_messages,
    client_response_rate,
    first_responses,
    median_first_response_days,
    repeat_followup_requests,
    sla_adherence,
)
from tasks.reporting.kpis.completeness import (
    checklist_completion_rate,
    item_frame,
    missing_artifact_rate,
    missing_at_handoff_qa,
    with_item_stages,
)
from tasks.reporting.kpis.founder import avoidable_share, interruptions_per_week
from tasks.reporting.kpis.frames import Frames
from tasks.reporting.kpis.periods import as_utc, month_bounds, week_start
from tasks.reporting.kpis.quality import first_30_day_incidents, handoff_rework_rate
from tasks.reporting.kpis.speed import (
    median_close_to_kickoff,
    median_kickoff_to_ready,
    stage_stays,
    with_durations,
)


@dataclass(frozen=True)
class Timeline:
    """The rows of a frame that have an instant, sorted by it: a period is two binary searches.

    The memo asks for some twenty periods; scanning a million rows for each would cost more
    than loading them.
    """

    frame: pd.DataFrame
    column: str

    @classmethod
    def of(cls, frame: pd.DataFrame, column: str) -> Timeline:
        """Sort once (stable, so rows keep their load order among equal instants)."""
        return cls(frame[frame[column].notna()].sort_values(column, kind="stable"), column)

    def window(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """The rows with start <= instant < end, the ones `in_period` keeps."""
        first, stop = self.frame[self.column].searchsorted([start, end], side="left")
        return self.frame.iloc[first:stop]


@dataclass(frozen=True)
class Context:
    """Frames prepared once for many periods: durations, stage stays, the item list.

    The views below are derived from `frames` on first use, so a context for a subset of
    clients (`dataclasses.replace` with other frames) derives its own.
    """

    frames: Frames
    calendar: BusinessCalendar
    items: pd.DataFrame
    stays: pd.DataFrame
    cadence_days: float
    stage_slas: dict[int, tuple[float, TimeUnit, str]]

    @cached_property
    def handed(self) -> Timeline:
        """Onboardings by handoff instant."""
        return Timeline.of(self.frames.onboardings, "ready_at")

    @cached_property
    def kickoffs(self) -> Timeline:
        """Onboardings by kickoff instant."""
        return Timeline.of(self.frames.onboardings, "kickoff_at")

    @cached_property
    def sla_sent(self) -> Timeline:
        """SLA-bound messages sent, by sending instant (only what adherence reads)."""
        comms = self.frames.communications
        sent = comms["sla_key"].notna() & comms["status"].isin(DELIVERED)
        return Timeline.of(comms.loc[sent, ["sla_key", "status", "sent_at",
                                            "late_business_minutes"]], "sent_at")

    @cached_property
    def followups(self) -> Timeline:
        """Client status requests, by instant."""
        responses = self.frames.responses
        return Timeline.of(responses[responses["kind"] == "followup_request"], "at")

    @cached_property
    def client_messages(self) -> Timeline:
        """Messages to clients, answered or not, by sending instant."""
        return Timeline.of(client_messages(self.frames.communications, self.frames.responses),
                           "sent_at")

    @cached_property
    def first_responses(self) -> Timeline:
        """Each client's first response and how long it took, by its instant."""
        return Timeline.of(first_responses(self.client_messages.frame, self.frames.responses,
                                           self.calendar), "first_response")

    @cached_property
    def incidents(self) -> Timeline:
        """Incidents, by instant."""
        return Timeline.of(self.frames.incidents, "at")

    @cached_property
    def interruptions(self) -> Timeline:
        """Founder interruptions, by instant."""
        return Timeline.of(self.frames.interruptions, "at")

    @cached_property
    def failed_qa(self) -> pd.DataFrame:
        """QA checks that failed (the only ones rework counts)."""
        qa = self.frames.qa_reviews
        return qa[~qa["passed"].astype(bool)]

    @cached_property
    def handoff_qa(self) -> pd.DataFrame:
        """QA checks of the handoff stage (the only ones missing artifacts are judged at)."""
        qa = self.frames.qa_reviews
        return qa[qa["stage"] == STAGE_ORDER[-1]]

    @cached_property
    def item_artifacts(self) -> pd.DataFrame:
        """Artifacts of required items with their stage index (the checklist's join)."""
        return with_item_stages(self.frames.artifacts, self.items)

    @cached_property
    def handoff_artifacts(self) -> pd.DataFrame:
        """Artifacts of the handoff stage's items."""
        keys = self.items.loc[self.items["stage"] == STAGE_ORDER[-1], "key"]
        artifacts = self.frames.artifacts
        return artifacts[artifacts["key"].isin(keys)]


def prepare(frames: Frames, playbook: Playbook, calendar: BusinessCalendar) -> Context:
    """Compute per-client durations and stage stays once, for every period asked later."""
    onboardings = with_durations(frames.onboardings, calendar)
    frames = replace(frames, onboardings=onboardings)
    stays = stage_stays(onboardings, frames.transitions, calendar)
    cadence = playbook.slas["setup_progress_update"].every if (
        "setup_progress_update" in playbook.slas) else None
    slas: dict[int, tuple[float, TimeUnit, str]] = {
        i: (stage.sla.within, stage.sla.unit, stage.sla.from_)
        for i, stage in enumerate(playbook.stages)}
    return Context(frames=frames, calendar=calendar, items=item_frame(playbook), stays=stays,
                   cadence_days=float(cadence or 3), stage_slas=slas)


def compute_kpis(ctx: Context, start: dt.datetime | pd.Timestamp,
                 end: dt.datetime | pd.Timestamp) -> dict[str, float]:
    """Every headline KPI for the period [start, end).

    Each KPI function gets only the rows it could count (the period's window of a timeline,
    the failed checks...); it filters them again as it would the whole frame.
    """
    s, e = as_utc(start), as_utc(end)
    f = ctx.frames
    handed = ctx.handed.window(s, e)
    interruptions = ctx.interruptions.window(s, e)
    messages = ctx.client_messages.window(s, e)
    missing = missing_at_handoff_qa(handed, ctx.handoff_artifacts, ctx.handoff_qa, ctx.items,
                                    s, e)
    return {
        "median_close_to_kickoff_days": median_close_to_kickoff(ctx.kickoffs.window(s, e), s, e),
        "median_kickoff_to_ready_days": median_kickoff_to_ready(handed, s, e),
        "checklist_completion_rate": checklist_completion_rate(
            f.onboardings, ctx.item_artifacts, f.transitions, ctx.items, ctx.stage_slas,
            ctx.calendar, s, e),
        "missing_artifact_rate": missing_artifact_rate(missing),
        "sla_adherence": sla_adherence(ctx.sla_sent.window(s, e), s, e),
        "repeat_followup_requests": float(repeat_followup_requests(
            ctx.followups.window(s, e), s, e)),
        "handoff_rework_rate": handoff_rework_rate(handed, ctx.failed_qa, s, e),
        "first_30_day_incidents": float(first_30_day_incidents(
            f.onboardings, ctx.incidents.window(s, e), s, e)),
        "founder_interruptions_per_week": interruptions_per_week(interruptions, s, e),
        "avoidable_interruption_share": avoidable_share(interruptions, s, e),
        "handoffs": float(len(handed)),
        "median_first_response_days": median_first_response_days(
            ctx.first_responses.window(s, e), s, e),
        "client_response_rate": client_response_rate(messages, s, e),
        "bounce_rate": bounce_rate(messages, s, e),
    }


def kpi_table(ctx: Context, start: dt.datetime | pd.Timestamp,
              end: dt.datetime | pd.Timestamp) -> pd.DataFrame:
    """The KPIs for the whole portfolio, then by segment and by offer: one row per scope."""
    return apply_by_scope(ctx, lambda sub: compute_kpis(sub, start, end))


def weekly_series(ctx: Context, as_of: dt.datetime | pd.Timestamp,
                  weeks: int) -> pd.DataFrame:
    """The KPIs for each of the last `weeks` complete weeks before `as_of`, oldest first."""
    tz = ctx.calendar.timezone
    end = week_start(as_of, tz)
    rows = []
    for back in range(weeks, 0, -1):
        s = (end.tz_convert(tz) - pd.Timedelta(days=7 * back)).tz_convert("UTC")
        e = (end.tz_convert(tz) - pd.Timedelta(days=7 * (back - 1))).tz_convert("UTC")
        s, e = week_start(s + pd.Timedelta(hours=12), tz), week_start(e + pd.Timedelta(hours=12),
                                                                      tz)
        rows.append({"week": s.tz_convert(tz).strftime("%G-W%V"), "start": s, "end": e,
                     **compute_kpis(ctx, s, e)})
    return pd.DataFrame(rows)


def monthly_series(ctx: Context, last_month: str, months: int) -> pd.DataFrame:
    """The KPIs for each of the `months` months ending with `last_month`, oldest first."""
    tz = ctx.calendar.timezone
    last = pd.Period(last_month, freq="M")
    rows = []
    for back in range(months - 1, -1, -1):
        period = str(last - back)
        s, e = month_bounds(period, tz)
        rows.append({"month": period, "start": s, "end": e, **compute_kpis(ctx, s, e)})
    return pd.DataFrame(rows)


def apply_by_scope(ctx: Context, func: Callable[[Context], dict[str, Any]]) -> pd.DataFrame:
    """Run a per-context function for the whole portfolio, each segment and each offer."""
    rows = [{"scope": "all", "group": "all", **func(ctx)}]
    ob = ctx.frames.onboardings
    for dimension in ("segment", "offer"):
        for value, ids in ob.groupby(dimension)["id"]:
            sub = replace(ctx, frames=ctx.frames.for_clients(ids.tolist()),
                          stays=ctx.stays[ctx.stays["onboarding_id"].isin(ids)])
            rows.append({"scope": dimension, "group": value, **func(sub)})
    return pd.DataFrame(rows)
