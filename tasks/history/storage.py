"""Bulk inserts with explicit ids: to the SQLite driver already in its storage format (the generic
path converts every value through the column types, ~4x slower), elsewhere through Core."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Table, func, select, text
from sqlalchemy.orm import Session

from db.models import (
    Artifact,
    Blocker,
    ClientResponse,
    Communication,
    Event,
    Incident,
    Onboarding,
    Packet,
    QaReview,
    UTCDateTime,
)
from tasks.history.rows import Rows

MODELS: dict[str, type[Any]] = {
    "blockers": Blocker, "artifacts": Artifact, "events": Event, "comms": Communication,
    "responses": ClientResponse, "qa": QaReview, "incidents": Incident, "packets": Packet}


@dataclass
class Prepared:
    """Rows for one table, ready for the driver (tuples on SQLite, dicts for Core)."""

    model: type[Any]
    columns: list[str]
    values: list[Any]


def prepare_batch(batch: Sequence[Rows], onboardings: list[dict[str, Any]],
                  sqlite: bool) -> list[Prepared]:
    """One insert per table for a batch of clients (their onboardings first, for the keys)."""
    out = [prepare(Onboarding, onboardings, sqlite)]
    for name, model in MODELS.items():
        rows = [row for r in batch for row in r.rows[name]]
        if name == "events":
            rows.sort(key=lambda row: row["at"])  # each client's log reads in time order
        out.append(prepare(model, rows, sqlite))
    return out


def sqlite_datetime(value: dt.datetime | None) -> str | None:
    """UTCDateTime on SQLite: naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    if value is None:
        return None
    if value.tzinfo is not dt.UTC:
        value = value.astimezone(dt.UTC)
    return value.isoformat(" ", "microseconds")[:26]  # drop the '+00:00'


def sqlite_value(column_type: Any) -> Callable[[Any], Any] | None:
    """How SQLAlchemy would store a value of this type on SQLite (None: as it is)."""
    if isinstance(column_type, UTCDateTime):
        return sqlite_datetime
    if isinstance(column_type, Date):
        return lambda v: None if v is None else v.isoformat()
    if isinstance(column_type, JSON):
        return lambda v: None if v is None else json.dumps(v)
    if isinstance(column_type, Boolean):
        return lambda v: None if v is None else int(v)
    return None


def prepare(model: type[Any], rows: list[dict[str, Any]], sqlite: bool) -> Prepared:
    """SQLite: tuples already in its storage format; elsewhere the dicts, for Core."""
    columns = list(rows[0]) if rows else []
    if not (sqlite and rows):
        return Prepared(model, columns, rows)
    table: Table = model.__table__
    get = itemgetter(*columns)
    convert = [(i, f) for i, c in enumerate(columns)
               if (f := sqlite_value(table.c[c].type)) is not None]
    values = []
    for row in rows:
        value = list(get(row))
        for i, f in convert:
            value[i] = f(value[i])
        values.append(tuple(value))
    return Prepared(model, columns, values)


class Sink:
    """Bulk inserts with explicit ids: to the SQLite driver in its storage format, else Core."""

    def __init__(self, session: Session) -> None:
        self.conn = session.connection()
        self.sqlite = self.conn.dialect.name == "sqlite"
        self.counts: dict[str, int] = {}

    def next_id(self, model: type[Any]) -> int:
        return int(self.conn.scalar(select(func.coalesce(func.max(model.id), 0))) or 0) + 1

    def insert(self, prepared: Prepared) -> None:
        if not prepared.values:
            return
        table: Table = prepared.model.__table__
        if self.sqlite:
            self.conn.exec_driver_sql(
                f"INSERT INTO {table.name} ({', '.join(prepared.columns)}) "
                f"VALUES ({', '.join('?' * len(prepared.columns))})", prepared.values)
        else:
            self.conn.execute(table.insert(), prepared.values)
        self.counts[table.name] = self.counts.get(table.name, 0) + len(prepared.values)

    def finish(self) -> None:
        """Explicit ids leave PostgreSQL's sequences behind: move them past what was written."""
        if self.conn.dialect.name != "postgresql":
            return
        for table in ("onboardings", "blockers"):
            self.conn.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"))
