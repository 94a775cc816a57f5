"""10,000 waiting clients, by simulation, on the scale-out set-up (`make bench-scale`; not in
`make bench`): a Prefect server on PostgreSQL, the app database on PostgreSQL, the handoff
runner. N onboardings are created, and N `client-onboarding` runs are left the way the flow
leaves them at close confirmation (Suspended, its pause key, the stage form's input schema and
description saved under the keyset, as `suspend_flow_run` writes them), through the Prefect API,
concurrently, without executing N processes. Then, one at a time:

* the server database's size, and the flow-run list as the UI asks for it (200 runs, sorted);
* a reconcile pass over all N (nothing to do) beside its floor: one query per table on the raw
  driver and the same paged id reads of the runs over plain HTTP;
* the hourly sweep (the first one after the N sign-ups sends N welcome mails; the next finds
  nothing due), to .eml files;
* one client resumed through `handoff artifact add`, to its stage-transition row (the real
  runner executes the resumed run);
* a reconcile pass that finds `MISSED` runs whose condition was met while they slept (the facts
  written straight to the database, no wake-up): it resumes them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from typing import Any

from tests.bench import stagemove
from tests.bench.common import OUT, Part, fmt, log, median
from tests.bench.stack import count_runs, new_clients, prefect_stack, tree
from tests.conftest import pg_database_pair

CLIENTS = 10_000
CONCURRENCY = 16
MISSED = 10
STAGE = "close_confirmation"


def database_mib(url: str) -> float:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("+asyncpg", "+psycopg"))
    try:
        with engine.connect() as conn:
            return int(conn.scalar(text("SELECT pg_database_size(current_database())"))) / 2**20
    finally:
        engine.dispose()


async def suspend_all(ids: list[int]) -> dict[int, str]:
    """A Suspended client-onboarding run per onboarding, as the flow leaves it at close
    confirmation; returns {onboarding id: flow run id}."""
    import orjson
    from prefect import get_client
    from prefect._internal.pydantic.v2_schema import create_v2_schema, is_v2_model
    from prefect.input.run_input import keyset_from_paused_state, run_input_subclass_from_type
    from prefect.states import Suspended
    from sqlalchemy import select

    from db.models import Onboarding
    from db.playbook import get_playbook
    from db.session import transaction
    from db.settings import get_settings
    from tasks.onboarding.steps import _describe, check_stage_exit, stage_form
    from tasks.prefect.names import onboarding_run_name

    problems = check_stage_exit(ids[0], STAGE).problems  # every new client waits for the same
    stage_name = get_playbook().stage(STAGE).name
    with transaction() as session:
        clients = dict(session.execute(select(Onboarding.id, Onboarding.client_name)
                                       .where(Onboarding.id.in_(ids))).tuples().all())
    form = stage_form(STAGE)
    gate = asyncio.Semaphore(CONCURRENCY)
    runs: dict[int, str] = {}
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(get_settings().onboarding_deployment)

        async def one(onboarding_id: int) -> None:
            async with gate:
                state = Suspended(timeout_seconds=None, pause_key=f"{STAGE.replace('_', '-')}-0")
                keyset = keyset_from_paused_state(state)
                state.state_details.run_input_keyset = keyset
                run = await client.create_flow_run_from_deployment(
                    deployment.id, parameters={"onboarding_id": onboarding_id}, state=state,
                    name=onboarding_run_name(onboarding_id),
                    tags=["segment:smb", "offer:Growth", f"onboarding:{onboarding_id}"],
                    idempotency_key=f"onboarding-{onboarding_id}")
                # What RunInput.save writes, through this client rather than a new one a call.
                waiting = run_input_subclass_from_type(form.with_initial_data(
                    description=_describe(stage_name, clients[onboarding_id], problems, None)))
                schema = (create_v2_schema(waiting.__name__, model_base=waiting)
                          if is_v2_model(waiting) else waiting.model_json_schema(by_alias=True))
                await client.create_flow_run_input(run.id, keyset["schema"],
                                                   orjson.dumps(schema).decode())
                if isinstance(waiting._description, str):
                    await client.create_flow_run_input(run.id, keyset["description"],
                                                       orjson.dumps(waiting._description).decode())
                runs[onboarding_id] = str(run.id)
                if len(runs) % 1000 == 0:
                    log(f"scale: {len(runs):,} runs Suspended")

        await asyncio.gather(*(one(i) for i in ids))
    return runs


def link_runs(runs: dict[int, str]) -> None:
    """Store each run id on its onboarding, in one executemany (what `remember_run` stores)."""
    from sqlalchemy import bindparam, update

    from db.models import Onboarding
    from db.session import transaction

    with transaction() as session:
        session.connection().execute(
            update(Onboarding).where(Onboarding.id == bindparam("ob"))
            .values(flow_run_id=bindparam("run")),
            [{"ob": ob, "run": run} for ob, run in runs.items()])


def ui_list(api: str, repeats: int = 5) -> dict[str, float]:
    """POST /flow_runs/filter as the runs page asks: 200 runs, newest first (and Suspended)."""
    import httpx

    took: dict[str, list[float]] = {"all": [], "suspended": [], "count": []}
    with httpx.Client(timeout=120) as http:
        for _ in range(repeats):
            for what, path, body in (
                    ("all", "filter", {"sort": "START_TIME_DESC", "limit": 200, "offset": 0}),
                    ("suspended", "filter", {"sort": "EXPECTED_START_TIME_DESC", "limit": 200,
                                             "flow_runs": {"state": {"name": {
                                                 "any_": ["Suspended"]}}}}),
                    ("count", "count", {"flow_runs": {"state": {"name": {
                        "any_": ["Suspended"]}}}})):
                started = time.perf_counter()
                http.post(f"{api}/flow_runs/{path}", json=body).raise_for_status()
                took[what].append(time.perf_counter() - started)
    return {what: median(values) for what, values in took.items()}


def reconcile_floor(api: str, app_db: str, run_ids: list[str]) -> int:
    """One query per table on the raw driver, the same rule, and the runs read by id, 200 a
    page, over plain HTTP."""
    import httpx
    import psycopg

    from tests.bench.reconcile import floor

    rows = floor(lambda: psycopg.connect(app_db.replace("postgresql+psycopg", "postgresql")),
                 "%s")
    states = {}
    with httpx.Client(timeout=120) as http:
        for page in range(0, len(run_ids), 200):
            response = http.post(f"{api}/flow_runs/filter", json={
                "flow_runs": {"id": {"any_": run_ids[page:page + 200]}}, "limit": 200})
            response.raise_for_status()
            states.update({run["id"]: run["state"]["name"] for run in response.json()})
    return len(rows) + len(states)


def bench_scale(clients: int) -> dict[str, Any]:
    from db.playbook import get_playbook
    from db.session import dispose_all, session_factory, transaction
    from db.settings import get_settings
    from tasks.comms.sweeps import run_sweep
    from tasks.onboarding import records
    from tasks.prefect.reconcile import reconcile_runs

    result: dict[str, Any] = {"clients": clients}
    with pg_database_pair("bench") as (prefect_db, app_db), \
            prefect_stack(OUT / "scale", prefect_db=prefect_db, app_db=app_db) as (api, env,
                                                                                  runner):
        result["empty_mib"] = {"prefect": database_mib(prefect_db), "app": database_mib(app_db)}
        started = time.perf_counter()
        ids = new_clients(clients, "Scale")
        result["onboardings_s"] = time.perf_counter() - started
        log(f"scale: {clients:,} onboardings in {result['onboardings_s']:.0f}s; suspending runs")
        started = time.perf_counter()
        runs = asyncio.run(suspend_all(ids))
        link_runs(runs)
        result["runs_s"] = time.perf_counter() - started
        suspended = count_runs(api, "Suspended")
        assert suspended == clients, f"{suspended} of {clients} runs Suspended"
        log(f"scale: {clients:,} runs Suspended in {result['runs_s']:.0f}s")
        result["mib"] = {"prefect": database_mib(prefect_db), "app": database_mib(app_db)}
        result["runner"] = dict(zip(("processes", "rss_mib"), tree(runner.pid), strict=True))
        result["ui_list_s"] = ui_list(api)
        log(f"scale: UI list {result['ui_list_s']}")
        timings: dict[str, list[float]] = {"reconcile": [], "floor": []}
        for _ in range(3):
            started = time.perf_counter()
            report = reconcile_runs()
            timings["reconcile"].append(time.perf_counter() - started)
            assert report.changed == 0, report
            started = time.perf_counter()
            reconcile_floor(api, app_db, list(runs.values()))
            timings["floor"].append(time.perf_counter() - started)
        result["reconcile_s"] = {k: median(v) for k, v in timings.items()}
        log(f"scale: reconcile {result['reconcile_s']}")
        settings, playbook, factory = get_settings(), get_playbook(), session_factory()
        now = dt.datetime.now(dt.UTC)
        sweeps = []
        for hour in (0, 1):
            started = time.perf_counter()
            sweep = run_sweep(factory, playbook, settings, now + dt.timedelta(hours=hour))
            sweeps.append({"s": time.perf_counter() - started, "sent": sweep.sent,
                           "queued": sweep.queued_messages + sweep.queued_escalations})
        result["sweeps"] = sweeps
        log(f"scale: sweeps {sweeps}")
        result["resumes"] = stagemove.summary(stagemove.moves_by(env, ids[:3], 1))
        log(f"scale: stage moves {result['resumes']}")
        missed = ids[3:3 + MISSED]
        with transaction() as session:
            for ob in missed:
                for key in stagemove.CLOSE_KEYS:
                    records.record_artifact(session, playbook, ob, key, by="bench",
                                            at=dt.datetime.now(dt.UTC))
        started = time.perf_counter()
        report = reconcile_runs()
        result["reconcile_missed"] = {"s": time.perf_counter() - started,
                                      "resumed": len(report.resumed)}
        log(f"scale: reconcile with {MISSED} missed wake-ups {result['reconcile_missed']}")
        result["final_mib"] = {"prefect": database_mib(prefect_db), "app": database_mib(app_db)}
        dispose_all()
    return result


def table(m: dict[str, Any]) -> list[str]:
    n = m["clients"]
    rec, ui = m["reconcile_s"], m["ui_list_s"]
    moves = m["resumes"]["median"]
    return [f"**{n:,} waiting clients, by simulation** (Prefect server and app database on "
            "PostgreSQL, the handoff runner)", "",
            "| measurement | result |", "|---|---|",
            f"| {n:,} onboardings created / {n:,} Suspended runs created through the API "
            f"({CONCURRENCY} at once) | {m['onboardings_s']:.0f} s / {m['runs_s']:.0f} s "
            f"({n / m['runs_s']:.0f} runs/s) |",
            f"| Prefect database / app database size | {m['mib']['prefect']:.0f} MiB / "
            f"{m['mib']['app']:.0f} MiB (empty: {m['empty_mib']['prefect']:.0f} / "
            f"{m['empty_mib']['app']:.0f}); {(m['mib']['prefect'] - m['empty_mib']['prefect']) * 1024 / n:.1f} KiB a waiting run |",
            f"| runner while {n:,} wait | {m['runner']['processes']} processes, "
            f"{m['runner']['rss_mib']:.0f} MiB |",
            f"| UI flow-run list (200, newest first) / 200 Suspended / count | "
            f"{fmt(ui['all'])} s / {fmt(ui['suspended'])} s / {fmt(ui['count'])} s |",
            f"| reconcile pass, nothing to do / floor (one query per table + paged id reads) | "
            f"{fmt(rec['reconcile'])} s / {fmt(rec['floor'])} s "
            f"({rec['reconcile'] / rec['floor']:.1f}×) |",
            f"| reconcile pass resuming {MISSED} missed wake-ups | "
            f"{fmt(m['reconcile_missed']['s'])} s, {m['reconcile_missed']['resumed']} resumed |",
            f"| sweep after the sign-ups / the hour after | {fmt(m['sweeps'][0]['s'])} s "
            f"({m['sweeps'][0]['sent']:,} sent) / {fmt(m['sweeps'][1]['s'])} s "
            f"({m['sweeps'][1]['sent']} sent) |",
            f"| one client at a time through `handoff artifact add` (median of "
            f"{m['resumes']['n']}): CLI / CLI returned → stage row (wake, runner poll, engine "
            f"start, flow body) | {moves['cli']:.1f} s / {moves['after_cli']:.1f} s "
            f"({moves['wake']:.1f}, {moves['poll']:.1f}, {moves['start']:.1f}, "
            f"{moves['body']:.1f}) |"]


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale-clients", type=int, default=CLIENTS,
                        help="waiting clients simulated by `--only scale`")


PART = Part(name="scale", run=lambda args: bench_scale(200 if args.quick
                                                       else args.scale_clients),
            table=table, order=70, default=False, arguments=arguments)
