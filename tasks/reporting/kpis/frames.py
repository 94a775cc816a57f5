"""Loading: every table the KPIs read, one chunked `pandas.read_sql` per table, as of one instant.

Whatever the number of clients, this is the only place the KPIs touch the database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields, replace
from typing import Any

import pandas as pd
from sqlalchemy import Integer, Numeric, String, select, type_coerce
from sqlalchemy.engine import Connection

from db.models import (
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
from db.session import collector_paused

EVENT_KINDS = ("stage_transition", "ready_to_deliver", "kickoff_rescheduled")

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
