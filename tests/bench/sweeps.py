"""Reminder + escalation sweeps at 1k, 10k and 100k onboardings against a hand-written floor.

`tasks.sweeps.run_sweep` exactly as the flows run it, at the hourly sweep that follows a one-off
catch-up over the seeded history, alternated with the floor (one `UNION ALL` statement per sweep
on the raw DBAPI cursor, the same rules and rendering) on the same state.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import psutil

from tests.bench.common import (
    OUT,
    Part,
    PeakRss,
    StatementCounter,
    child_json,
    fmt,
    fresh_copy,
    log,
    median,
)
from tests.bench.seeded import SEED_END, caught_up_db

SWEEP_SIZES = (1_000, 10_000, 100_000)
REPEATS = {1_000: 5, 10_000: 5, 100_000: 2}

# The floor: one hand-written statement per sweep returning everything the rules read, one row
# per fact, tagged by kind. Same facts as tasks.comms.snapshot.load_snapshot, one round trip.
FLOOR_SQL = """
SELECT 'o', o.id, o.client_name, o.segment, o.offer, o.owner_email, o.backup_email,
       o.contact_emails, o.stage, o.stage_entered_at, o.next_action, o.next_action_due,
       o.closed_at, o.kickoff_at, o.kickoff_by, o.first_milestone, o.stage_items, o.status, o.client_tz
  FROM onboardings o WHERE o.status = 'active'
UNION ALL
SELECT 'a', a.onboarding_id, a.key, a.recorded_at, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM artifacts a JOIN onboardings o ON o.id = a.onboarding_id WHERE o.status = 'active'
UNION ALL
SELECT 'm', c.onboarding_id, c.template, c.idempotency_key, c.status, c.sent_at, c.created_at,
       c.cycle, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM communications c JOIN onboardings o ON o.id = c.onboarding_id WHERE o.status = 'active'
UNION ALL
SELECT 'b', b.onboarding_id, b.id, b.type, b.critical, b.note, b.opened_at, b.affects_timeline,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM blockers b JOIN onboardings o ON o.id = b.onboarding_id
 WHERE o.status = 'active' AND b.resolved_at IS NULL
UNION ALL
SELECT 'r', r.onboarding_id, max(r.at), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM client_responses r JOIN onboardings o ON o.id = r.onboarding_id
 WHERE o.status = 'active' AND r.kind = 'response' GROUP BY r.onboarding_id
UNION ALL
SELECT 'w', 0, w.email, w.until, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL
  FROM owner_away w WHERE w.since <= :as_of AND w.until >= :local_day
"""


class _Row:
    """The onboarding columns the rules read, without ORM instrumentation."""

    __slots__ = ("id", "client_name", "segment", "offer", "owner_email", "backup_email",
                 "contact_emails", "stage", "stage_entered_at", "next_action", "next_action_due",
                 "closed_at", "kickoff_at", "kickoff_by", "first_milestone", "stage_items",
                 "status", "client_tz")

    def __init__(self, values: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, values, strict=True):
            setattr(self, name, value)

    @property
    def contacts(self) -> list[str]:
        return [c for c in self.contact_emails.split(",") if c]


class _Blocker:
    __slots__ = ("id", "type", "critical", "note", "opened_at", "affects_timeline")

    def __init__(self, *values: Any) -> None:
        for name, value in zip(self.__slots__, values, strict=True):
            setattr(self, name, value)


def _ts(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)


def _day(value: Any) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


def floor_sweep(dbapi: Any, playbook: Any, as_of: dt.datetime, *, messages: bool) -> list[Any]:
    """One statement, the same Client/Snapshot objects, the same rules, the same rendering."""
    from tasks.comms.cadences import due_messages
    from tasks.comms.escalations import due_escalations
    from tasks.comms.snapshot import Client, SentMessage, Snapshot
    from tasks.mail.render import render_message

    local_day = as_of.astimezone(playbook.calendar.tz).date().isoformat()
    cursor = dbapi.cursor()
    cursor.execute(FLOOR_SQL.replace(":as_of", "?").replace(":local_day", "?"),
                   (as_of.replace(tzinfo=None).isoformat(sep=" "), local_day))
    clients: dict[int, Any] = {}
    away: dict[str, dt.date] = {}
    keys: set[str] = set()
    for kind, ob_id, *v in cursor.fetchall():
        if kind == "o":
            row = _Row((ob_id, v[0], v[1], v[2], v[3], v[4], v[5], v[6], _ts(v[7]), v[8],
                        _ts(v[9]), _ts(v[10]), _ts(v[11]), _day(v[12]), _day(v[13]),
                        json.loads(v[14]) if v[14] else None, v[15], v[16]))
            clients[ob_id] = Client(row=row)  # type: ignore[arg-type]
        elif kind == "a":
            clients[ob_id].artifacts[v[0]] = _ts(v[1])
        elif kind == "m":
            clients[ob_id].messages.append(SentMessage(
                template=v[0], key=v[1], status=v[2], sent_at=_ts(v[3]),
                created_at=_ts(v[4]), cycle=v[5]))  # type: ignore[arg-type]
            keys.add(v[1])
        elif kind == "b":
            clients[ob_id].blockers.append(_Blocker(v[0], v[1], bool(v[2]), v[3], _ts(v[4]),
                                                    bool(v[5])))
        elif kind == "r":
            clients[ob_id].last_response = _ts(v[0])
        else:
            away[v[0]] = _day(v[1])  # type: ignore[assignment]
    cursor.close()
    snapshot = Snapshot(clients=sorted(clients.values(), key=lambda c: c.row.id), away=away,
                        keys=keys)
    for client in snapshot.clients:
        client.blockers.sort(key=lambda b: b.id)
    drafts = (due_messages(playbook, snapshot, as_of) if messages
              else due_escalations(playbook, snapshot, as_of))
    for draft in drafts:
        render_message(draft.template, draft.context)
    return drafts


def sweeps_worker(size: str, source_path: str, runs: str) -> dict[str, Any]:
    """Alternate floor and sweep on fresh copies of the seeded database; medians and peaks."""
    n, source, repeats = int(size), Path(source_path), int(runs)
    work = OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    os.environ["HANDOFF_HOME"] = str(work / "home")
    os.environ.pop("HANDOFF_SMTP_HOST", None)  # mail to the .eml file sink
    import tasks.comms.sweeps as sweeps
    from db.playbook import get_playbook
    from db.session import dispose_all, get_engine, session_factory
    from db.settings import get_settings

    get_settings.cache_clear()
    playbook = get_playbook()
    counter = StatementCounter()
    original_deliver = sweeps.deliver

    def deliver_phase(*args: Any, **kwargs: Any) -> Any:
        counter.phase = "deliver"
        try:
            return original_deliver(*args, **kwargs)
        finally:
            counter.phase = "queue"

    sweeps.deliver = deliver_phase  # type: ignore[assignment]  # marks the phase, same code
    floor_s: list[float] = []
    sweep_s: list[float] = []
    queue_s: list[float] = []
    result: dict[str, Any] = {"n": n}
    # One copy per size; repeat r is the hourly sweep at SEED_END + r hours on it: the floor
    # only reads, the queue phase is rolled back, and the sweep (which commits) runs last, so
    # each hour compares floor and sweep on the same state.
    url = fresh_copy(source, work / f"sweep-{n}.db")
    shutil.rmtree(work / "home", ignore_errors=True)
    get_settings.cache_clear()
    engine = get_engine(url)
    counter.attach(engine)
    factory = session_factory(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM communications").scalar()  # warm the cache
    same_due_set = True
    for attempt in range(repeats):
        hour = SEED_END + dt.timedelta(hours=attempt)
        # -- the floor: one statement per sweep + the same rules and rendering
        raw = engine.raw_connection()
        with PeakRss() as floor_mem:
            started = time.perf_counter()
            floor_msgs = floor_sweep(raw.dbapi_connection, playbook, hour, messages=True)
            floor_escs = floor_sweep(raw.dbapi_connection, playbook, hour, messages=False)
            floor_s.append(time.perf_counter() - started)
        raw.close()
        # The floor runs on the raw DBAPI cursor, below SQLAlchemy: two statements by design.
        floor_statements = 2
        # -- the queue phase alone (snapshot + rules + render + insert), rolled back
        with factory() as session:
            session.begin()
            started = time.perf_counter()
            sweeps.queue_due(session, playbook, hour, messages=True, escalations=False)
            sweeps.queue_due(session, playbook, hour, messages=False, escalations=True)
            queue_s.append(time.perf_counter() - started)
            session.rollback()
        # -- the sweeps, as reminder_sweep and escalation_sweep run them
        settings = get_settings()
        counter.reset()
        counter.phase = "queue"
        with PeakRss() as sweep_mem:
            started = time.perf_counter()
            reminders = sweeps.run_sweep(factory, playbook, settings, hour, messages=True,
                                         escalations=False)
            escalations = sweeps.run_sweep(factory, playbook, settings, hour,
                                           messages=False, escalations=True)
            sweep_s.append(time.perf_counter() - started)
        statements = dict(counter.counts)
        from sqlalchemy import func, select

        from db.models import Communication, Onboarding
        with factory() as session:
            queued = set(session.scalars(select(Communication.idempotency_key).where(
                Communication.created_at == hour)))
        same_due_set &= {d.key for d in floor_msgs + floor_escs} == {
            k for k in queued if not k.startswith("delivery-failure:")}
        if attempt == 0:
            with factory() as session:
                active = session.scalar(select(func.count()).select_from(Onboarding)
                                        .where(Onboarding.status == "active"))
            result.update(
                active=active, due_messages=len(floor_msgs), due_escalations=len(floor_escs),
                sent=reminders.sent + escalations.sent,
                statements={"floor": floor_statements, "sweep_total": sum(statements.values()),
                            "sweep_queue": statements.get("queue", 0),
                            "sweep_deliver": statements.get("deliver", 0)},
                rss_delta_mib={"floor": floor_mem.delta_mib, "sweep": sweep_mem.delta_mib})
        log(f"  {n:>7,}: floor {floor_s[-1]:.2f}s  queue {queue_s[-1]:.2f}s  "
            f"sweep {sweep_s[-1]:.2f}s  ({reminders.sent + escalations.sent} sent)")
    dispose_all()
    result.update(same_due_set=same_due_set)
    result.update(floor_s=median(floor_s), sweep_s=median(sweep_s), queue_s=median(queue_s),
                  runs=repeats, process_maxrss_mib=psutil.Process().memory_info().rss / 2**20)
    return result


def peak_worker(kind: str, source: str) -> dict[str, Any]:
    """Peak RSS of one floor or queue-phase pass (both sweeps), in a fresh process, above its
    baseline once imported and connected; the queue phase is rolled back."""
    os.environ["HANDOFF_HOME"] = str(OUT / "work" / "peak-home")
    import tasks.comms.cadences  # noqa: F401  (imported before the baseline, as the queue phase has)
    import tasks.comms.sweeps as sweeps
    import tasks.mail.render  # noqa: F401
    from db.playbook import get_playbook
    from db.session import get_engine, session_factory

    playbook = get_playbook()
    url = f"sqlite:///{source}"
    engine = get_engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM communications").scalar()
    with PeakRss() as mem:
        if kind == "floor":
            raw = engine.raw_connection()
            floor_sweep(raw.dbapi_connection, playbook, SEED_END, messages=True)
            floor_sweep(raw.dbapi_connection, playbook, SEED_END, messages=False)
            raw.close()
        else:
            with session_factory(url)() as session:
                session.begin()
                sweeps.queue_due(session, playbook, SEED_END, messages=True, escalations=False)
                sweeps.queue_due(session, playbook, SEED_END, messages=False, escalations=True)
                session.rollback()
    return {"peak_mib": mem.delta_mib}


def bench_sweeps(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": []}
    for n in SWEEP_SIZES[:2] if args.quick else SWEEP_SIZES:
        path, prepared = caught_up_db(n)
        log(f"sweeps at {n:,} onboardings")
        size = child_json("tests.bench.sweeps:sweeps_worker", str(n), str(path),
                          str(2 if args.quick else REPEATS[n]))
        for kind in ("floor", "queue"):
            size[f"{kind}_peak_mib"] = child_json("tests.bench.sweeps:peak_worker", kind,
                                                  str(path))["peak_mib"]
        out["sizes"].append({**size, **prepared})
    out["preparation_s"] = {
        "seeding": sum(s.get("seeding_s", 0) for s in out["sizes"]),
        "catch-up": sum(s.get("catch_up_s", 0) for s in out["sizes"] if s.get("fresh_catch_up"))}
    return out


def table(result: dict[str, Any]) -> list[str]:
    lines = ["**Reminder + escalation sweeps** (SQLite file, mail to the .eml sink), "
             "the hourly sweep after a one-off catch-up over the seeded history", "",
             "| onboardings | active | due msgs+escs | floor s | queue phase s | sweep s "
             "(queue+send) | queue/floor | sweep/floor | statements: floor / queue / "
             "deliver | peak RSS MiB, fresh process: floor / queue phase | same due set | one-off "
             "catch-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in result["sizes"]:
        st = s["statements"]
        lines.append(
            f"| {s['n']:,} | {s['active']:,} | {s['due_messages']:,}+"
            f"{s['due_escalations']:,} | {fmt(s['floor_s'])} | {fmt(s['queue_s'])} | "
            f"{fmt(s['sweep_s'])} | {fmt(s['queue_s'] / s['floor_s'], 1)}× | "
            f"{fmt(s['sweep_s'] / s['floor_s'], 1)}× | {st['floor']} / "
            f"{st['sweep_queue']} / {st['sweep_deliver']} | "
            f"{s['floor_peak_mib']:.0f} / {s['queue_peak_mib']:.0f} | "
            f"{'yes' if s['same_due_set'] else 'NO'} | {s['catch_up_queued']:,} queued in "
            f"{s['catch_up_s']:.0f} s |")
    return lines


PART = Part(name="sweeps", run=bench_sweeps, table=table, order=20)
