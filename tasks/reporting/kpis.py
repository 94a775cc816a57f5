"""The onboarding KPIs: frames loaded in one pass, then pure functions over pandas frames.

`load_frames` runs one `pandas.read_sql` per table, whatever the number of clients. Everything
else here is a pure function of those frames, a business calendar and a period `[start, end)`,
so each KPI can be tested on a small frame built by hand. Durations are in business days
(business time divided by the length of one business day), as the playbook counts them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from functools import cached_property, lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import Integer, Numeric, String, select, type_coerce
from sqlalchemy.engine import Connection

from db.models import (
    DELIVERED,
    Artifact,
    Audit,
    Blocker,
    ClientResponse,
    Communication,
    CorrectiveAction,
    Event,
    FounderInterruption,
    Incident,
    Onboarding,
    Packet,
    QaReview,
    UTCDateTime,
)
from db.playbook import STAGE_ORDER, Playbook, TimeUnit
from db.session import collector_paused
from tasks.calendar.business_time import BusinessCalendar

INCIDENT_WINDOW = pd.Timedelta(days=30)
SCOPE_WINDOW = pd.Timedelta(days=14)
EVENT_KINDS = ("stage_transition", "ready_to_deliver", "kickoff_rescheduled")
DEPENDENCY_BLOCKERS = ("missing_access", "internal_dependency_delay", "approval_delay")


@dataclass(frozen=True)
class Metric:
    """How one KPI reads: its label, unit, and which direction is better."""

    key: str
    label: str
    unit: Literal["days", "pct", "count", "rate"]
    better: Literal["up", "down"]

    def format(self, value: float | None) -> str:
        """The value as a founder reads it: 14%, 3.2 d, 5."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        if self.unit == "pct":
            return f"{value * 100:.0f}%"
        if self.unit == "days":
            return f"{value:.1f} d"
        if self.unit == "rate":
            return f"{value:.1f}"
        return f"{value:.0f}"


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("median_close_to_kickoff_days", "close → kickoff (median)", "days", "down"),
    Metric("median_kickoff_to_ready_days", "kickoff → ready (median)", "days", "down"),
    Metric("checklist_completion_rate", "checklist completion", "pct", "up"),
    Metric("missing_artifact_rate", "missing artifacts at handoff QA", "pct", "down"),
    Metric("sla_adherence", "SLA adherence", "pct", "up"),
    Metric("repeat_followup_requests", "repeat follow-up requests", "count", "down"),
    Metric("handoff_rework_rate", "handoff rework", "pct", "down"),
    Metric("first_30_day_incidents", "first-30-day incidents", "count", "down"),
    Metric("founder_interruptions_per_week", "founder interruptions / week", "rate", "down"),
    Metric("avoidable_interruption_share", "avoidable interruptions", "pct", "down"),
    Metric("handoffs", "clients handed off", "count", "up"),
    Metric("median_first_response_days", "first client response (median)", "days", "down"),
    Metric("client_response_rate", "client messages answered", "pct", "up"),
    Metric("bounce_rate", "client messages bounced", "pct", "down"),
)}


# -- loading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frames:
    """Every table the KPIs read, as of one instant (rows after `as_of` are not loaded)."""

    onboardings: pd.DataFrame
    artifacts: pd.DataFrame
    transitions: pd.DataFrame
    reschedules: pd.DataFrame
    blockers: pd.DataFrame
    communications: pd.DataFrame
    responses: pd.DataFrame
    qa_reviews: pd.DataFrame
    incidents: pd.DataFrame
    interruptions: pd.DataFrame
    packets: pd.DataFrame
    actions: pd.DataFrame
    audits: pd.DataFrame

    def for_clients(self, ids: pd.Index | list[int]) -> Frames:
        """The same frames restricted to these onboardings (for a segment or an offer)."""
        keep = set(ids)
        out: dict[str, pd.DataFrame] = {}
        for f in fields(self):
            frame: pd.DataFrame = getattr(self, f.name)
            if f.name == "onboardings":
                out[f.name] = frame[frame["id"].isin(keep)]
            elif f.name in ("actions",):
                out[f.name] = frame
            else:
                out[f.name] = frame[frame["onboarding_id"].isin(keep)]
        return replace(self, **out)


CHUNK_ROWS = 50_000


def _shared_strings(values: pd.Series) -> pd.Series:
    """The same strings, each distinct value one shared object.

    The driver makes a new str per cell; a million-row column of a dozen templates then costs
    ~60 bytes a row instead of one pointer. Missing values are kept as the driver gave them.
    """
    raw = values.to_numpy()
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    if not len(uniques) or len(uniques) * 2 > len(raw):
        return values  # all missing, or mostly distinct (names, e-mails): nothing to share
    out = uniques.take(codes)
    missing = codes < 0
    out[missing] = raw[missing]
    return pd.Series(out, index=values.index, name=values.name, dtype=object)


def _compact(chunk: pd.DataFrame, instants: set[str]) -> pd.DataFrame:
    """One fetched chunk with typed datetimes and shared strings."""
    for column in chunk.columns:
        if column in instants:
            # SQLite hands back 'YYYY-MM-DD HH:MM:SS.ffffff' strings, PostgreSQL aware datetimes.
            chunk[column] = pd.to_datetime(chunk[column], utc=True, format="ISO8601")
        elif chunk[column].dtype == object:
            chunk[column] = _shared_strings(chunk[column])
    return chunk


def _concat(chunks: list[pd.DataFrame], numbers: set[str]) -> pd.DataFrame:
    """The chunks as one frame, in the dtypes one read of the whole table gives.

    A nullable number column is float wherever a chunk had a NULL, but object in a chunk that
    was all NULL; concatenated as is, the whole column would turn object.
    """
    if len(chunks) == 1:
        return chunks[0]
    for column in numbers:
        if any(chunk[column].dtype != object for chunk in chunks):
            for chunk in chunks:
                if chunk[column].dtype == object:
                    chunk[column] = chunk[column].astype("float64")
    return pd.concat(chunks, ignore_index=True)


def _read(con: Connection, stmt: Any) -> pd.DataFrame:
    """Read in chunks, each made compact before the next is fetched.

    Datetimes come back as the driver gives them and are converted by pandas in one
    vectorised pass per chunk; the ORM type would convert them one value at a time. Fetching
    everything first would hold every row as Python objects at once (gigabytes at 100k
    clients).
    """
    instants = {c.key for c in stmt.selected_columns if isinstance(c.type, UTCDateTime)}
    numbers = {c.key for c in stmt.selected_columns if isinstance(c.type, (Integer, Numeric))}
    raw = stmt.with_only_columns(*[
        type_coerce(c, String()).label(c.key) if c.key in instants else c
        for c in stmt.selected_columns])
    with collector_paused():
        return _concat([_compact(chunk, instants)
                        for chunk in pd.read_sql(raw, con, chunksize=CHUNK_ROWS)], numbers)


def load_frames(con: Connection, as_of: dt.datetime) -> Frames:
    """One query per table, set-based: everything the KPIs need up to `as_of`.

    Only the columns something reads are loaded (not an onboarding's backup e-mail, an
    artifact's stage, a message's due and creation times, a QA failure's reason).
    """
    ob = Onboarding
    onboardings = _read(con, select(
        ob.id, ob.client_name, ob.segment, ob.offer, ob.owner_email, ob.stage,
        ob.stage_entered_at, ob.status, ob.closed_at, ob.kickoff_at, ob.kickoff_by,
        ob.first_milestone, ob.ready_at, ob.next_action_due, ob.playbook_version,
    ).where(ob.closed_at <= as_of).order_by(ob.id))
    artifacts = _read(con, select(Artifact.onboarding_id, Artifact.key, Artifact.recorded_at)
                      .where(Artifact.recorded_at <= as_of))
    # The two stages are extracted by the database: decoding a million JSON documents in
    # Python would cost more than the rest of the load.
    events = _read(con, select(
        Event.onboarding_id, Event.at, Event.kind,
        Event.detail["from_stage"].as_string().label("from_stage"),
        Event.detail["to_stage"].as_string().label("to_stage"),
    ).where(Event.kind.in_(EVENT_KINDS), Event.at <= as_of, Event.onboarding_id.is_not(None)))
    moves = events[events["kind"].isin(("stage_transition", "ready_to_deliver"))]
    moves = moves.assign(to_stage=moves["to_stage"].where(moves["kind"] == "stage_transition",
                                                          "ready"))
    blockers = _read(con, select(Blocker.id, Blocker.onboarding_id, Blocker.type,
                                 Blocker.critical, Blocker.owner_email, Blocker.opened_at,
                                 Blocker.resolved_at).where(Blocker.opened_at <= as_of))
    blockers.loc[blockers["resolved_at"] > as_of, "resolved_at"] = pd.NaT
    comms = _read(con, select(
        Communication.onboarding_id, Communication.template, Communication.lane,
        Communication.audience, Communication.recipients, Communication.status,
        Communication.sla_key, Communication.sent_at, Communication.late_business_minutes,
    ).where(Communication.created_at <= as_of))
    responses = _read(con, select(ClientResponse.onboarding_id, ClientResponse.kind,
                                  ClientResponse.template, ClientResponse.at)
                      .where(ClientResponse.at <= as_of))
    qa = _read(con, select(QaReview.onboarding_id, QaReview.passed, QaReview.stage, QaReview.at)
               .where(QaReview.at <= as_of))
    incidents = _read(con, select(Incident.onboarding_id, Incident.severity, Incident.at)
                      .where(Incident.at <= as_of))
    interruptions = _read(con, select(
        FounderInterruption.onboarding_id, FounderInterruption.category,
        FounderInterruption.avoidable, FounderInterruption.lane, FounderInterruption.at,
    ).where(FounderInterruption.at <= as_of))
    packets = _read(con, select(Packet.onboarding_id, Packet.revision, Packet.created_at)
                    .where(Packet.created_at <= as_of))
    actions = _read(con, select(
        CorrectiveAction.id, CorrectiveAction.source_key, CorrectiveAction.title,
        CorrectiveAction.owner_email, CorrectiveAction.lane, CorrectiveAction.due,
        CorrectiveAction.created_at, CorrectiveAction.closed_at, CorrectiveAction.close_note,
    ).where(CorrectiveAction.created_at <= as_of))
    audits = _read(con, select(Audit.onboarding_id, Audit.at, Audit.first_milestone_met,
                               Audit.incidents, Audit.churn_risk, Audit.notes)
                   .where(Audit.at <= as_of))
    # Facts that happen later are not known yet at as_of, whatever the row says today.
    for column in ("kickoff_at", "ready_at"):
        onboardings.loc[onboardings[column] > as_of, column] = pd.NaT
    return Frames(onboardings=onboardings, artifacts=artifacts,
                  transitions=moves[["onboarding_id", "at", "from_stage", "to_stage"]],
                  reschedules=events.loc[events["kind"] == "kickoff_rescheduled",
                                         ["onboarding_id", "at"]],
                  blockers=blockers, communications=comms, responses=responses, qa_reviews=qa,
                  incidents=incidents, interruptions=interruptions, packets=packets,
                  actions=actions, audits=audits)


# -- business time -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Days:
    """Business seconds accumulated at the start of each local day of a range."""

    first: pd.Timestamp
    days: pd.DatetimeIndex
    is_open: np.ndarray
    before: np.ndarray
    length: float
    opening: float


@lru_cache(maxsize=64)
def _days(calendar: BusinessCalendar, first: pd.Timestamp, last: pd.Timestamp) -> _Days:
    days = pd.date_range(first, last, freq="D")
    is_open = np.array([calendar.is_business_day(d.date()) for d in days], dtype="float64")
    length = calendar.business_day_length.total_seconds()
    start = calendar.day_start
    return _Days(first=first, days=days, is_open=is_open, length=length,
                 before=np.concatenate([[0.0], np.cumsum(is_open * length)[:-1]]),
                 opening=start.hour * 3600 + start.minute * 60 + start.second
                 + start.microsecond / 1e6)


def _wall(calendar: BusinessCalendar, stamps: pd.Series) -> pd.Series:
    return stamps.dt.tz_convert(calendar.timezone).dt.tz_localize(None)


def _clock(table: _Days, wall: pd.Series) -> np.ndarray:
    day = wall.dt.normalize()
    index = (day - table.first).dt.days.to_numpy()
    elapsed = np.clip((wall - day).dt.total_seconds().to_numpy() - table.opening, 0.0,
                      table.length)
    return table.before[index] + elapsed * table.is_open[index]  # type: ignore[no-any-return]


def business_clock(calendar: BusinessCalendar, stamps: pd.Series) -> pd.Series:
    """Business seconds from a common origin to each instant (NaN where missing), vectorised.

    The difference of two readings is the business time between them, as
    calendar.business_time_between counts it: each business day contributes the part of its
    wall-clock window [day_start, day_end) that has elapsed.
    """
    out = pd.Series(np.nan, index=stamps.index, dtype="float64")
    valid = stamps.notna()
    if not valid.any():
        return out
    wall = _wall(calendar, stamps[valid])
    day = wall.dt.normalize()
    out[valid] = _clock(_days(calendar, day.min(), day.max()), wall)
    return out


def add_business_seconds(calendar: BusinessCalendar, stamps: pd.Series,
                         seconds: float) -> pd.Series:
    """stamps + seconds of business time, vectorised (calendar.add_business_time semantics:
    the earliest instant that reaches the total, so an exact fit lands on a closing time)."""
    out = pd.Series(pd.NaT, index=stamps.index, dtype="datetime64[ns, UTC]")
    valid = stamps.notna()
    if not valid.any():
        return out
    wall = _wall(calendar, stamps[valid])
    day = wall.dt.normalize()
    reach = int(seconds // max(calendar.business_day_length.total_seconds(), 1)) * 3 + 30
    table = _days(calendar, day.min(), day.max() + pd.Timedelta(days=reach))
    target = _clock(table, wall) + seconds
    ends = table.before + table.is_open * table.length  # accumulated at each day's close
    index = np.searchsorted(ends, target, side="left")
    into = target - table.before[index]
    local = (table.days[index] + pd.to_timedelta(table.opening + into, unit="s"))
    out[valid] = pd.DatetimeIndex(local).tz_localize(calendar.timezone).tz_convert("UTC")
    return out


def business_days(calendar: BusinessCalendar, start: pd.Series, end: pd.Series) -> pd.Series:
    """Business days from each start to each end (NaN where either is missing)."""
    both = business_clock(calendar, pd.concat([start, end], ignore_index=True))
    seconds = both.iloc[len(start):].to_numpy() - both.iloc[:len(start)].to_numpy()
    day = calendar.business_day_length.total_seconds()
    return pd.Series(seconds / day, index=start.index, dtype="float64")


def _in(series: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    return (series >= start) & (series < end)


def _median(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.median()) if len(values) else math.nan


def _ts(value: dt.datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# -- speed -------------------------------------------------------------------------------------


def with_durations(onboardings: pd.DataFrame, calendar: BusinessCalendar) -> pd.DataFrame:
    """Add close→kickoff and kickoff→ready in business days (computed once per client)."""
    if "close_to_kickoff_days" in onboardings.columns:
        return onboardings
    return onboardings.assign(
        close_to_kickoff_days=business_days(calendar, onboardings["closed_at"],
                                            onboardings["kickoff_at"]),
        kickoff_to_ready_days=business_days(calendar, onboardings["kickoff_at"],
                                            onboardings["ready_at"]),
    )


def median_close_to_kickoff(onboardings: pd.DataFrame, start: pd.Timestamp,
                            end: pd.Timestamp) -> float:
    """Median business days from close to kickoff, over kickoffs held in the period."""
    rows = onboardings[_in(onboardings["kickoff_at"], start, end)]
    return _median(rows["close_to_kickoff_days"])


def median_kickoff_to_ready(onboardings: pd.DataFrame, start: pd.Timestamp,
                            end: pd.Timestamp) -> float:
    """Median business days from kickoff to ready-to-deliver, over handoffs in the period."""
    rows = onboardings[_in(onboardings["ready_at"], start, end)]
    return _median(rows["kickoff_to_ready_days"])


def stage_stays(onboardings: pd.DataFrame, transitions: pd.DataFrame,
                calendar: BusinessCalendar) -> pd.DataFrame:
    """Every completed stay in a stage: onboarding, stage, entered, left, business days."""
    if transitions.empty:
        return pd.DataFrame({"onboarding_id": pd.Series(dtype="int64"),
                             "stage": pd.Series(dtype="object"),
                             "entered": pd.Series(dtype="datetime64[ns, UTC]"),
                             "left": pd.Series(dtype="datetime64[ns, UTC]"),
                             "days": pd.Series(dtype="float64")})
    exits = transitions.rename(columns={"at": "left", "from_stage": "stage"})
    entries = transitions.rename(columns={"at": "entered", "to_stage": "stage"})
    first = onboardings[["id", "closed_at"]].rename(columns={"id": "onboarding_id",
                                                             "closed_at": "entered"})
    first = first.assign(stage=STAGE_ORDER[0])
    entries = pd.concat([first, entries[["onboarding_id", "entered", "stage"]]])
    stays = exits[["onboarding_id", "stage", "left"]].merge(
        entries, on=["onboarding_id", "stage"], how="inner")
    stays = stays[stays["entered"] <= stays["left"]]
    stays = stays.sort_values("entered").drop_duplicates(["onboarding_id", "stage", "left"],
                                                         keep="last")
    stays = stays.assign(days=business_days(calendar, stays["entered"], stays["left"]))
    return stays.reset_index(drop=True)


def stage_aging(onboardings: pd.DataFrame, stays: pd.DataFrame, calendar: BusinessCalendar,
                start: pd.Timestamp, end: pd.Timestamp,
                now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Per stage: median days of stays ended in the period, and clients in it `now` (or end).

    The current stage is what the record says today, so "now" should be the load instant.
    """
    done = stays[_in(stays["left"], start, end)]
    now = end if now is None else now
    active = onboardings[(onboardings["status"] == "active") & onboardings["ready_at"].isna()
                         & (onboardings["stage_entered_at"] <= now)]
    ages = business_days(calendar, active["stage_entered_at"],
                         pd.Series(now, index=active.index))
    active = active.assign(age=ages)
    rows = []
    for stage in STAGE_ORDER:
        stage_done = done[done["stage"] == stage]["days"]
        here = active[active["stage"] == stage]["age"]
        rows.append({"stage": stage, "completed": int(len(stage_done)),
                     "median_days": _median(stage_done),
                     "in_stage_now": int(len(here)), "median_age_now": _median(here),
                     "max_age_now": float(here.max()) if len(here) else math.nan})
    return pd.DataFrame(rows)


# -- completeness ------------------------------------------------------------------------------


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
                              stage_slas: dict[int, tuple[float, TimeUnit]],
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
    for index, (within, unit) in stage_slas.items():
        here = where[where["stage_index"] == index]
        if len(here):
            overdue.loc[here.index] = stage_due(calendar, here["entered"], within, unit) < end
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
    handed = onboardings[_in(onboardings["ready_at"], start, end)]
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


# -- communication -----------------------------------------------------------------------------


def sla_adherence(communications: pd.DataFrame, start: pd.Timestamp,
                  end: pd.Timestamp) -> float:
    """Share of SLA-bound messages sent in the period with no business minute late."""
    sent = communications[communications["sla_key"].notna()
                          & communications["status"].isin(DELIVERED)
                          & _in(communications["sent_at"], start, end)]
    if sent.empty:
        return math.nan
    return float((sent["late_business_minutes"].fillna(0) == 0).mean())


def sla_misses_by_key(communications: pd.DataFrame, start: pd.Timestamp,
                      end: pd.Timestamp) -> pd.Series:
    """Late SLA-bound messages sent in the period, per SLA key."""
    sent = communications[communications["sla_key"].notna()
                          & communications["status"].isin(DELIVERED)
                          & _in(communications["sent_at"], start, end)]
    late = sent[sent["late_business_minutes"].fillna(0) > 0]
    return late.groupby("sla_key").size().sort_values(ascending=False)


def repeat_followup_requests(responses: pd.DataFrame, start: pd.Timestamp,
                             end: pd.Timestamp) -> int:
    """Clients who asked for status more than once in the period."""
    asks = responses[(responses["kind"] == "followup_request") & _in(responses["at"], start, end)]
    counts = asks.groupby("onboarding_id").size()
    return int((counts > 1).sum())


# -- client replies (read from the mailbox by the inbox sweep, or logged by a VA) -----------------


def client_messages(communications: pd.DataFrame, responses: pd.DataFrame) -> pd.DataFrame:
    """Every message that reached (or bounced from) a client, with whether it was answered.

    A response answers the latest client message sent to that onboarding before it, so a reply
    to the second reminder counts for the second reminder, not for the welcome.
    """
    comms = communications
    sent = comms[(comms["audience"] == "client") & comms["status"].isin(("sent", "bounced"))
                 & comms["sent_at"].notna() & comms["onboarding_id"].notna()]
    sent = sent[["onboarding_id", "template", "status", "sent_at"]].astype(
        {"onboarding_id": "int64"}).sort_values("sent_at", kind="stable").reset_index(drop=True)
    sent["message"] = sent.index
    replies = responses[(responses["kind"] == "response") & responses["at"].notna()]
    replies = replies[["onboarding_id", "at"]].astype({"onboarding_id": "int64"}).sort_values(
        "at", kind="stable")
    if sent.empty or replies.empty:
        return sent.assign(answered=False)
    answered = pd.merge_asof(replies, sent[["onboarding_id", "sent_at", "message"]],
                             left_on="at", right_on="sent_at", by="onboarding_id",
                             direction="backward")
    return sent.assign(answered=sent["message"].isin(answered["message"].dropna()))


def first_responses(messages: pd.DataFrame, responses: pd.DataFrame,
                    calendar: BusinessCalendar) -> pd.DataFrame:
    """Per client: its first response and the business days since the first message it got."""
    replies = responses[(responses["kind"] == "response") & responses["at"].notna()]
    first = replies.groupby("onboarding_id")["at"].min().rename("first_response")
    opened = messages.groupby("onboarding_id")["sent_at"].min().rename("first_message")
    both = pd.concat([opened, first], axis=1, join="inner")
    both = both[both["first_response"] >= both["first_message"]]
    return both.assign(days=business_days(calendar, both["first_message"],
                                          both["first_response"])).reset_index()


def median_first_response_days(first: pd.DataFrame, start: pd.Timestamp,
                               end: pd.Timestamp) -> float:
    """Median business days from a client's first message to their first reply, over the
    clients who first replied in the period."""
    return _median(first.loc[_in(first["first_response"], start, end), "days"])


def client_response_rate(messages: pd.DataFrame, start: pd.Timestamp,
                         end: pd.Timestamp) -> float:
    """Share of the client messages sent in the period that the client answered."""
    sent = messages[_in(messages["sent_at"], start, end)]
    return float(sent["answered"].mean()) if len(sent) else math.nan


def response_rates(messages: pd.DataFrame, start: pd.Timestamp,
                   end: pd.Timestamp) -> pd.DataFrame:
    """Per template: messages sent in the period, answered, and the rate (which get answers)."""
    sent = messages[_in(messages["sent_at"], start, end)]
    table = sent.groupby("template").agg(sent=("answered", "size"),
                                         answered=("answered", "sum")).reset_index()
    table["answered"] = table["answered"].astype(int)
    table["rate"] = table["answered"] / table["sent"]
    return table.sort_values(["rate", "template"], ascending=[False, True],
                             ignore_index=True)


def bounce_rate(messages: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> float:
    """Share of the client messages sent in the period that bounced."""
    sent = messages[_in(messages["sent_at"], start, end)]
    return float((sent["status"] == "bounced").mean()) if len(sent) else math.nan


# -- quality -----------------------------------------------------------------------------------


def handoff_rework_rate(onboardings: pd.DataFrame, qa_reviews: pd.DataFrame,
                        start: pd.Timestamp, end: pd.Timestamp) -> float:
    """Share of clients handed off in the period who failed a QA check before handoff."""
    handed = onboardings[_in(onboardings["ready_at"], start, end)][["id", "ready_at"]]
    if handed.empty:
        return math.nan
    failed = qa_reviews[~qa_reviews["passed"].astype(bool)].merge(
        handed, left_on="onboarding_id", right_on="id")
    failed = failed[failed["at"] <= failed["ready_at"]]
    return failed["onboarding_id"].nunique() / len(handed)


def first_30_day_incidents(onboardings: pd.DataFrame, incidents: pd.DataFrame,
                           start: pd.Timestamp, end: pd.Timestamp) -> int:
    """Incidents in the period that happened within 30 days of the client's handoff."""
    rows = incidents[_in(incidents["at"], start, end)].merge(
        onboardings[["id", "ready_at"]], left_on="onboarding_id", right_on="id")
    early = (rows["at"] >= rows["ready_at"]) & (rows["at"] <= rows["ready_at"] + INCIDENT_WINDOW)
    return int(early.sum())


# -- founder leverage --------------------------------------------------------------------------


def interruptions_by_category(interruptions: pd.DataFrame, start: pd.Timestamp,
                              end: pd.Timestamp) -> pd.DataFrame:
    """Founder interruptions per week in the period, by category, avoidable vs required."""
    weeks = max((end - start) / pd.Timedelta(days=7), 1e-9)
    rows = interruptions[_in(interruptions["at"], start, end)]
    kind = rows["avoidable"].astype(bool).map({True: "avoidable", False: "required"})
    table = rows.assign(kind=kind).pivot_table(index="category", columns="kind", values="at",
                                               aggfunc="count", fill_value=0)
    table = table.reindex(columns=["avoidable", "required"], fill_value=0)
    table["total"] = table["avoidable"] + table["required"]
    table["per_week"] = table["total"] / weeks
    return table.sort_values("total", ascending=False).reset_index()


def interruptions_per_week(interruptions: pd.DataFrame, start: pd.Timestamp,
                           end: pd.Timestamp) -> float:
    """Founder interruptions per week in the period."""
    weeks = max((end - start) / pd.Timedelta(days=7), 1e-9)
    return float(_in(interruptions["at"], start, end).sum() / weeks)


def avoidable_share(interruptions: pd.DataFrame, start: pd.Timestamp,
                    end: pd.Timestamp) -> float:
    """Share of the period's founder interruptions the system could have handled."""
    rows = interruptions[_in(interruptions["at"], start, end)]
    return float(rows["avoidable"].astype(bool).mean()) if len(rows) else math.nan


# -- red flags ---------------------------------------------------------------------------------


def red_flags(frames: Frames, calendar: BusinessCalendar, cadence_days: float,
              start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Per client, the seed's red-flag indicators seen in the period; only flagged clients.

    frequent kickoff reschedules (2+), recurring missing access (2+ blockers), scope ambiguity
    in the first 14 days, a packet needing several revisions, and status requests more often
    than the update cadence (two requests less than one cadence apart).
    """
    ob = frames.onboardings.set_index("id")
    resched = frames.reschedules[_in(frames.reschedules["at"], start, end)]
    resched_n = resched.groupby("onboarding_id").size()
    blockers = frames.blockers[_in(frames.blockers["opened_at"], start, end)]
    access_n = blockers[blockers["type"] == "missing_access"].groupby("onboarding_id").size()
    scope = blockers[blockers["type"] == "scope_ambiguity"].merge(
        frames.onboardings[["id", "closed_at"]], left_on="onboarding_id", right_on="id")
    scope = scope[scope["opened_at"] <= scope["closed_at"] + SCOPE_WINDOW]
    scope_n = scope.groupby("onboarding_id").size()
    packets = frames.packets[_in(frames.packets["created_at"], start, end)]
    revisions = packets.groupby("onboarding_id")["revision"].max()
    asks = frames.responses[(frames.responses["kind"] == "followup_request")
                            & (frames.responses["at"] < end)].sort_values("at")
    asks = asks.assign(previous=asks.groupby("onboarding_id")["at"].shift())
    asks = asks[_in(asks["at"], start, end) & asks["previous"].notna()]
    gaps = business_days(calendar, asks["previous"], asks["at"])
    too_often = asks[gaps < cadence_days].groupby("onboarding_id").size()
    table = pd.DataFrame({
        "kickoff_reschedules": resched_n, "missing_access_blockers": access_n,
        "early_scope_ambiguity": scope_n, "packet_revisions": revisions,
        "status_asks_inside_cadence": too_often,
    }).fillna(0).astype("int64")
    flags = pd.DataFrame({
        "frequent_kickoff_reschedules": table["kickoff_reschedules"] >= 2,
        "recurring_missing_access": table["missing_access_blockers"] >= 2,
        "early_scope_misunderstanding": table["early_scope_ambiguity"] >= 1,
        "packet_multiple_revisions": table["packet_revisions"] > 1,
        "status_asks_above_cadence": table["status_asks_inside_cadence"] >= 1,
    })
    flags["flags"] = flags.sum(axis=1)
    flags = flags[flags["flags"] > 0]
    out = flags.join(ob[["client_name", "segment", "offer", "owner_email"]], how="left")
    out.index.name = "onboarding_id"
    return out.reset_index().sort_values(["flags", "onboarding_id"], ascending=[False, True])


RED_FLAG_LABELS = {
    "frequent_kickoff_reschedules": "frequent kickoff reschedules",
    "recurring_missing_access": "recurring missing access",
    "early_scope_misunderstanding": "scope misunderstanding in the first 14 days",
    "packet_multiple_revisions": "handoff packet needing several revisions",
    "status_asks_above_cadence": "status requests above the update cadence",
}


# -- the KPI table -----------------------------------------------------------------------------


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
        """The rows with start <= instant < end, the ones `_in` keeps."""
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
    stage_slas: dict[int, tuple[float, TimeUnit]]

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
    slas = {i: (stage.sla.within, stage.sla.unit) for i, stage in enumerate(playbook.stages)}
    return Context(frames=frames, calendar=calendar, items=item_frame(playbook), stays=stays,
                   cadence_days=float(cadence or 3), stage_slas=slas)


def compute_kpis(ctx: Context, start: dt.datetime | pd.Timestamp,
                 end: dt.datetime | pd.Timestamp) -> dict[str, float]:
    """Every headline KPI for the period [start, end).

    Each KPI function gets only the rows it could count (the period's window of a timeline,
    the failed checks...); it filters them again as it would the whole frame.
    """
    s, e = _ts(start), _ts(end)
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


def week_start(at: dt.datetime | pd.Timestamp, tz: str) -> pd.Timestamp:
    """Monday 00:00 (business timezone) of the week containing `at`, in UTC."""
    local = _ts(at).tz_convert(tz)
    monday = (local - pd.Timedelta(days=local.weekday())).normalize()
    return monday.tz_convert("UTC")


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


def month_bounds(month: str, tz: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[first instant, first instant of next month) of 'YYYY-MM' in the business timezone."""
    start = pd.Timestamp(f"{month}-01").tz_localize(tz)
    end = (start + pd.offsets.MonthBegin(1)).tz_localize(None).tz_localize(tz)
    return start.tz_convert("UTC"), end.tz_convert("UTC")


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


# -- blockers ----------------------------------------------------------------------------------


def blockers_by_type(blockers: pd.DataFrame, calendar: BusinessCalendar, start: pd.Timestamp,
                     end: pd.Timestamp) -> pd.DataFrame:
    """Per blocker type: opened in the period, still open at its end, blocked business days."""
    opened = blockers[_in(blockers["opened_at"], start, end)]
    live = blockers[(blockers["opened_at"] < end)
                    & (blockers["resolved_at"].isna() | (blockers["resolved_at"] > start))]
    clipped_start = live["opened_at"].clip(lower=start)
    clipped_end = live["resolved_at"].fillna(end).clip(upper=end)
    blocked = business_days(calendar, clipped_start, clipped_end)
    resolved = blockers[_in(blockers["resolved_at"], start, end)]
    resolution = business_days(calendar, resolved["opened_at"], resolved["resolved_at"])
    table = pd.DataFrame({
        "opened": opened.groupby("type").size(),
        "open_at_end": live[live["resolved_at"].isna() | (live["resolved_at"] >= end)]
        .groupby("type").size(),
        "blocked_days": blocked.groupby(live["type"]).sum(),
        "median_resolution_days": resolution.groupby(resolved["type"]).median(),
    })
    table[["opened", "open_at_end"]] = table[["opened", "open_at_end"]].fillna(0).astype("int64")
    table["blocked_days"] = table["blocked_days"].fillna(0.0)
    table.index.name = "type"
    return table.sort_values(["opened", "blocked_days"], ascending=False).reset_index()


def median_resolution_days(blockers: pd.DataFrame, calendar: BusinessCalendar,
                           start: pd.Timestamp, end: pd.Timestamp) -> float:
    """Median business days to resolve the blockers resolved in the period."""
    resolved = blockers[_in(blockers["resolved_at"], start, end)]
    return _median(business_days(calendar, resolved["opened_at"], resolved["resolved_at"]))


# -- thresholds --------------------------------------------------------------------------------


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


# -- capacity signals --------------------------------------------------------------------------


@dataclass(frozen=True)
class Signal:
    """A scale trigger from the seed, with the evidence and the lane it points at."""

    key: str
    lane: str
    text: str


def capacity_signals(ctx: Context, playbook: Playbook, series: pd.DataFrame,
                     as_of: pd.Timestamp,
                     max_dependency_heavy: int = 4) -> list[Signal]:
    """The seed's scale triggers that hold now, each naming the lane it points at."""
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
            lanes = f.interruptions[_in(f.interruptions["at"], end - pd.Timedelta(days=14),
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
