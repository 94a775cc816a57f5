"""KPIs and the monthly memo at 100k onboardings against one `pandas.read_sql` per table."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from tests.bench.common import Part, PeakRss, child_json, fmt, log, median
from tests.bench.seeded import seeded_db

KPI_SIZE = 100_000
MEMO_MONTH = "2026-02"

FLOOR_TABLES = {
    "onboardings": "id, client_name, segment, offer, owner_email, stage, stage_entered_at, "
                   "status, closed_at, kickoff_at, kickoff_by, first_milestone, ready_at, "
                   "next_action_due, playbook_version",
    "artifacts": "onboarding_id, key, recorded_at",
    "events": "onboarding_id, at, kind, json_extract(detail, '$.\"from_stage\"') AS from_stage, "
              "json_extract(detail, '$.\"to_stage\"') AS to_stage",
    "blockers": "id, onboarding_id, type, critical, owner_email, opened_at, resolved_at",
    "communications": "onboarding_id, template, lane, audience, recipients, status, sla_key, "
                      "sent_at, late_business_minutes",
    "client_responses": "onboarding_id, kind, template, at",
    "qa_reviews": "onboarding_id, passed, stage, at",
    "incidents": "onboarding_id, severity, at",
    "founder_interruptions": "onboarding_id, category, avoidable, lane, at",
    "packets": "onboarding_id, revision, created_at",
    "corrective_actions": "id, source_key, title, owner_email, lane, due, created_at, closed_at, "
                          "close_note",
    "audits": "onboarding_id, at, first_milestone_met, incidents, churn_risk, notes",
}
FLOOR_WHERE = {"events": "kind IN ('stage_transition', 'ready_to_deliver', "
                         "'kickoff_rescheduled') AND onboarding_id IS NOT NULL"}


def kpis_worker(source: str, runs: str) -> dict[str, Any]:
    repeats = int(runs)
    os.environ["HANDOFF_DATABASE_URL"] = f"sqlite:///{source}"
    import pandas as pd
    from sqlalchemy import text

    from db.playbook import get_playbook
    from db.session import get_engine, session_factory
    from db.settings import get_settings
    from tasks.mail.render import render_message
    from tasks.reporting.kpis.periods import month_bounds
    from tasks.reporting.kpis.table import compute_kpis
    from tasks.reporting.memo import build_memo, memo_context
    from tasks.reporting.shared import context_for

    get_settings.cache_clear()
    engine = get_engine(f"sqlite:///{source}")
    playbook = get_playbook()
    start, end = month_bounds(MEMO_MONTH, playbook.calendar.timezone)
    as_of = end.to_pydatetime()
    timings: dict[str, list[float]] = {"floor": [], "kpis": [], "memo": []}
    peaks: dict[str, float] = {}
    for _ in range(repeats):
        with PeakRss() as mem, engine.connect() as con:
            started = time.perf_counter()
            for table, columns in FLOOR_TABLES.items():
                where = FLOOR_WHERE.get(table)
                pd.read_sql(text(f"SELECT {columns} FROM {table}"
                                 + (f" WHERE {where}" if where else "")), con)
            timings["floor"].append(time.perf_counter() - started)
        peaks["floor"] = max(peaks.get("floor", 0.0), mem.delta_mib)
        with PeakRss() as mem, session_factory()() as session:
            started = time.perf_counter()
            ctx = context_for(session, playbook, as_of)
            compute_kpis(ctx, start, end)
            timings["kpis"].append(time.perf_counter() - started)
        peaks["kpis"] = max(peaks.get("kpis", 0.0), mem.delta_mib)
        del ctx
        with PeakRss() as mem, session_factory()() as session:
            started = time.perf_counter()
            memo = build_memo(session, playbook, MEMO_MONTH)
            render_message("monthly_memo", memo_context(memo, inline=False))
            timings["memo"].append(time.perf_counter() - started)
        peaks["memo"] = max(peaks.get("memo", 0.0), mem.delta_mib)
        log(f"  floor {timings['floor'][-1]:.2f}s  kpis {timings['kpis'][-1]:.2f}s  "
            f"memo {timings['memo'][-1]:.2f}s")
    import resource

    return {"floor_s": median(timings["floor"]), "kpis_s": median(timings["kpis"]),
            "memo_s": median(timings["memo"]), "runs": repeats,
            "peak_delta_mib": peaks,
            "process_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}



def bench_kpis(args: argparse.Namespace) -> dict[str, Any]:
    n = 10_000 if args.quick else KPI_SIZE
    path, seeded = seeded_db(n)
    log(f"KPIs and memo at {n:,} onboardings")
    result = child_json("tests.bench.kpis:kpis_worker", str(path), "2")
    result["n"] = n
    if seeded:
        result["preparation_s"] = {"seeding": round(seeded, 1)}
    return result


def table(k: dict[str, Any]) -> list[str]:
    peak = k["peak_delta_mib"]
    return [f"**KPIs and memo at {k['n']:,} onboardings**", "",
            "| floor (read_sql per table) s | load+compute_kpis s | memo build+render s "
            "| kpis/floor | memo/floor | peak MiB (process max RSS) |",
            "|---|---|---|---|---|---|",
            f"| {fmt(k['floor_s'])} | {fmt(k['kpis_s'])} | {fmt(k['memo_s'])} | "
            f"{fmt(k['kpis_s'] / k['floor_s'], 1)}× | {fmt(k['memo_s'] / k['floor_s'], 1)}"
            f"× | floor +{peak['floor']:.0f}, kpis +{peak['kpis']:.0f}, memo "
            f"+{peak['memo']:.0f} ({k['process_maxrss_mib']:.0f}) |"]


PART = Part(name="kpis", run=bench_kpis, table=table, order=30)
