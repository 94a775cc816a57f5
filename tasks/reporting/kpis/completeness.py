"""Completeness: required items recorded on time, and what was missing at handoff QA."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from db.playbook import STAGE_ORDER, Playbook, TimeUnit
from tasks.calendar.business_time import BusinessCalendar
from tasks.calendar.vectorised import add_business_seconds
from tasks.reporting.kpis.periods import in_period


def item_frame(playbook: Playbook) -> pd.DataFrame:
    """Required items (artifacts and checklists) a person records, with their stage's index."""
    rows = [{"key": item.key, "stage": stage.key, "stage_index": index}
            for index, stage in enumerate(playbook.stages)
            for item in playbook.required_items(stage.key) if not item.system]
    return pd.DataFrame(rows)


def stage_at(onboardings: pd.DataFrame, transitions: pd.DataFrame,
             at: pd.Timestamp) -> pd.DataFrame:
    """Each client's stage index (len(stages) once ready) and when it entered it, at `at`."""
    order = {stage: i for i, stage in enumerate(STAGE_ORDER)} | {"ready": len(STAGE_ORDER)}
    known = transitions[(transitions["at"] <= at)
                        & transitions["onboarding_id"].isin(onboardings["id"])]
    last = known.sort_values("at").groupby("onboarding_id")[["to_stage", "at"]].last()
    out = pd.DataFrame({"stage_index": 0, "entered": onboardings["closed_at"].to_numpy()},
                       index=pd.Index(onboardings["id"].to_numpy(), name="onboarding_id"))
    out.loc[last.index, "stage_index"] = last["to_stage"].map(order).astype("int64")
    out.loc[last.index, "entered"] = last["at"]
    ready = onboardings.loc[onboardings["ready_at"] <= at, "id"].to_numpy()
    out.loc[ready, "stage_index"] = len(STAGE_ORDER)
    return out


def stage_due(calendar: BusinessCalendar, entered: pd.Series, within: float,
              unit: TimeUnit) -> pd.Series:
    """When a stay that began at each `entered` is due under the stage SLA."""
    if unit is TimeUnit.CLOCK_HOURS:
        return entered + pd.Timedelta(hours=within)
    span = calendar.business_day_length * within if unit is TimeUnit.BUSINESS_DAYS else \
        dt.timedelta(hours=within)
    return add_business_seconds(calendar, entered, span.total_seconds())


def checklist_completion_rate(onboardings: pd.DataFrame, artifacts: pd.DataFrame,
                              transitions: pd.DataFrame, items: pd.DataFrame,
                              stage_slas: dict[int, tuple[float, TimeUnit, str]],
                              calendar: BusinessCalendar, start: pd.Timestamp,
                              end: pd.Timestamp) -> float:
    """Recorded share of the items that should exist by the end of the period.

    Over clients in flight at the end of the period and clients handed off in it: every item
    of each stage already left, plus the current stage's items once its SLA has run out.
    """
    in_flight = (onboardings["closed_at"] < end) & (onboardings["status"] != "cancelled") & (
        onboardings["ready_at"].isna() | (onboardings["ready_at"] >= start))
    clients = onboardings[in_flight]
    if clients.empty:
        return math.nan
    where = stage_at(clients, transitions, end)
    overdue = pd.Series(False, index=where.index)
    closed = clients.set_index("id")["closed_at"]
    for index, (within, unit, start) in stage_slas.items():
        here = where[where["stage_index"] == index]
        if len(here):
            # The stage SLA's `from`: the stage's entry, or the close (playbook stages[].sla.from)
            began = here["entered"] if start == "stage_entered" else here.index.map(closed)
            overdue.loc[here.index] = stage_due(calendar, pd.Series(began, index=here.index),
                                                within, unit) < end
    # Items of stages strictly before this one are due; the current stage's once overdue.
    due_through = where["stage_index"] - 1 + overdue.astype("int64")
    per_stage = items.groupby("stage_index").size().reindex(range(len(STAGE_ORDER)),
                                                            fill_value=0)
    through = np.concatenate([[0], per_stage.cumsum().to_numpy()])  # items due up to index i-1
    required = int(through[due_through.to_numpy() + 1].sum())
    if not required:
        return math.nan
    recorded = with_item_stages(artifacts[artifacts["recorded_at"] < end], items)
    # Artifacts of other clients map to NaN, which no stage index is <= to.
    done = int((recorded["stage_index"] <= recorded["onboarding_id"].map(due_through)).sum())
    return done / required


def with_item_stages(artifacts: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Artifacts of required items, with their stage's index (joined once per context)."""
    if "stage_index" in artifacts.columns:
        return artifacts
    return artifacts.merge(items[["key", "stage_index"]], on="key")


def missing_at_handoff_qa(onboardings: pd.DataFrame, artifacts: pd.DataFrame,
                          qa_reviews: pd.DataFrame, items: pd.DataFrame, start: pd.Timestamp,
                          end: pd.Timestamp) -> pd.DataFrame:
    """Handoff items not yet recorded at each client's first handoff QA check.

    For clients handed off in the period: the ready-to-deliver stage's items missing when the
    first QA check in that stage happened (the packet went to QA without them).
    """
    handed = onboardings[in_period(onboardings["ready_at"], start, end)]
    handoff_items = items[items["stage"] == STAGE_ORDER[-1]]["key"].tolist()
    checks = qa_reviews[(qa_reviews["stage"] == STAGE_ORDER[-1])
                        & qa_reviews["onboarding_id"].isin(handed["id"])]
    first = checks.groupby("onboarding_id")["at"].min()
    moments = handed.set_index("id")["ready_at"].copy()
    moments.update(first)
    if moments.empty or not handoff_items:
        # Typed, so callers can filter on "missing" (an untyped empty column selects columns).
        return pd.DataFrame({"onboarding_id": pd.Series(dtype="int64"),
                             "key": pd.Series(dtype=object), "missing": pd.Series(dtype=bool)})
    # One row per client and handoff item, clients in order, items in playbook order.
    grid = pd.DataFrame({"onboarding_id": moments.index.repeat(len(handoff_items)),
                         "key": handoff_items * len(moments)})
    have = artifacts[artifacts["onboarding_id"].isin(handed["id"])]
    when = grid.merge(have[["onboarding_id", "key", "recorded_at"]],
                      on=["onboarding_id", "key"], how="left")["recorded_at"]
    moment = moments.repeat(len(handoff_items)).reset_index(drop=True)
    return grid.assign(missing=when.isna() | (when > moment))


def missing_artifact_rate(missing: pd.DataFrame) -> float:
    """Share of handoff items missing at the first handoff QA check."""
    return float(missing["missing"].mean()) if len(missing) else math.nan
