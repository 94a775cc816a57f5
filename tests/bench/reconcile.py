"""reconcile's reads of every active client (`tasks.prefect.reconcile._active`: runs, exit
conditions, restarts) at 1.9k and 19k active clients (the 10k and 100k seeded histories),
against a set-based floor: one plain SQL query per table on the raw sqlite3 cursor (the driver
SQLAlchemy uses here) and the same pure exit rule. Statements are counted at both sizes.

The Prefect half of a pass (reading the runs 200 at a time, resuming the ones whose condition
is met) is measured on a real server at 10k waiting runs by `--only scale` (tests/bench/scale.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from tests.bench.common import OUT, Part, StatementCounter, child_json, fmt, fresh_copy, log, median
from tests.bench.seeded import seeded_db

SIZES = (10_000, 100_000)
RUNS = 5


def floor(connect: Callable[[], Any], mark: str = "?") -> list[tuple[int, str | None, bool, int]]:
    """The same facts, one query per table on a DBAPI connection (`mark`: its placeholder),
    the same rule (`exit_problems_of`)."""
    from db.models import Onboarding
    from db.playbook import Gate, get_playbook
    from tasks.onboarding.exits import ExitFacts, exit_problems_of

    playbook = get_playbook()
    qa_gated = [s.key for s in playbook.stages if Gate.QA_PASSED in s.gates]
    blocker_gated = [s.key for s in playbook.stages
                     if Gate.NO_OPEN_CRITICAL_BLOCKER in s.gates]
    active = f"SELECT id FROM {Onboarding.__tablename__} WHERE status = 'active'"

    def marks(keys: list[str]) -> str:
        return ", ".join([mark] * len(keys))

    with closing(connect()) as conn:
        rows = conn.execute("SELECT id, flow_run_id, stage, stage_items FROM onboardings "
                            "WHERE status = 'active'").fetchall()
        facts: dict[int, ExitFacts] = {}
        for onboarding_id, key in conn.execute(
                f"SELECT onboarding_id, key FROM artifacts WHERE onboarding_id IN ({active})"):
            facts.setdefault(onboarding_id, ExitFacts()).have.add(key)
        latest: dict[int, tuple[str, int]] = {}
        for onboarding_id, review_id, at, passed, reason in conn.execute(
                "SELECT onboarding_id, id, at, passed, reason FROM qa_reviews WHERE onboarding_id "
                f"IN ({active} AND stage IN ({marks(qa_gated)}))", qa_gated):
            if onboarding_id not in latest or (at, review_id) > latest[onboarding_id]:
                latest[onboarding_id] = (at, review_id)
                facts.setdefault(onboarding_id, ExitFacts()).qa = (bool(passed), reason)
        for onboarding_id, blocker_id, kind in conn.execute(
                "SELECT onboarding_id, id, type FROM blockers WHERE onboarding_id IN "
                f"({active} AND stage IN ({marks(blocker_gated)})) AND resolved_at IS NULL "
                "AND critical ORDER BY opened_at, id", blocker_gated):
            facts.setdefault(onboarding_id, ExitFacts()).critical.append((blocker_id, kind))
        restarts = dict(conn.execute("SELECT onboarding_id, count(*) FROM events WHERE kind = "
                                     "'flow_run_restarted' GROUP BY onboarding_id").fetchall())
    # The items each client is held to: those its stage required when it entered (held_items);
    # sqlite3 gives the JSON column as text, psycopg decoded.
    return [(onboarding_id, run_id,
             not exit_problems_of(playbook, stage, facts.get(onboarding_id, ExitFacts()),
                                  json.loads(items) if isinstance(items, str) else items),
             int(restarts.get(onboarding_id, 0))) for onboarding_id, run_id, stage, items in rows]


def reconcile_worker(source: str) -> dict[str, Any]:
    """`_active()` and the floor, alternating, on a fresh copy of a seeded database."""
    path = OUT / "reconcile" / "run.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    url = fresh_copy(Path(source), path)
    os.environ["HANDOFF_DATABASE_URL"] = url
    from db.session import get_engine
    from db.settings import get_settings
    from tasks.prefect.reconcile import _active

    get_settings.cache_clear()
    counter = StatementCounter()
    counter.attach(get_engine(url))
    timings: dict[str, list[float]] = {"floor": [], "reconcile": []}
    ours: list[tuple[int, str | None, bool, int]] = []
    theirs: list[tuple[int, str | None, bool, int]] = []
    for _ in range(RUNS):
        started = time.perf_counter()
        theirs = floor(lambda: sqlite3.connect(path))
        timings["floor"].append(time.perf_counter() - started)
        counter.reset()
        started = time.perf_counter()
        ours = _active()
        timings["reconcile"].append(time.perf_counter() - started)
    assert sorted(ours) == sorted(theirs), "reconcile and the floor disagree"
    return {"active": len(ours), "met": sum(met for _, _, met, _ in ours),
            "statements": counter.total, "floor_statements": 5,
            "floor_s": median(timings["floor"]), "reconcile_s": median(timings["reconcile"])}


def bench_reconcile(quick: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"sizes": {}, "preparation_s": {}}
    for n in SIZES[:1] if quick else SIZES:
        source, seeding = seeded_db(n)
        if seeding:
            result["preparation_s"]["seeding"] = round(seeding, 1)
        measured = child_json("tests.bench.reconcile:reconcile_worker", str(source))
        log(f"  reconcile reads at {n:,} onboardings ({measured['active']:,} active): "
            f"{measured['reconcile_s']:.2f}s, floor {measured['floor_s']:.2f}s, "
            f"{measured['statements']} statements")
        result["sizes"][str(n)] = measured
    return result


def table(m: dict[str, Any]) -> list[str]:
    lines = ["**reconcile's reads of every active client** (runs, exit conditions, restarts; "
             "SQLite) against one query per table on the raw driver and the same rule", "",
             "| onboardings | active | exit condition met | floor s | reconcile s | "
             "reconcile/floor | statements: floor / reconcile |",
             "|---|---|---|---|---|---|---|"]
    for n, s in m["sizes"].items():
        lines.append(f"| {int(n):,} | {s['active']:,} | {s['met']:,} | {fmt(s['floor_s'])} | "
                     f"{fmt(s['reconcile_s'])} | {s['reconcile_s'] / s['floor_s']:.1f}× | "
                     f"{s['floor_statements']} / {s['statements']} |")
    return lines


PART = Part(name="reconcile", run=lambda args: bench_reconcile(args.quick), table=table,
            order=25)
