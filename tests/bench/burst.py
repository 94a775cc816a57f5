"""A burst of client starts on the embedded default: N onboardings started at once (as a
reconcile after an outage, an import or a webhook storm does) against a Prefect server set up as
`make run` sets it up, and the handoff runner (with its warm CLI process; on PostgreSQL, two
workers and a warm CLI process of the VA's own). While the burst drains, a probe lists flow runs
the way the UI does and a VA records facts through the CLI; afterwards the server log is searched
for "database is locked" and every run's state history for time spent Late.

    python -m tests.bench --only burst [--burst-clients 200] [--burst-db sqlite|postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.bench.common import HANDOFF, OUT, PY, ROOT, Part, fmt, load, log, median
from tests.bench.stack import count_runs, new_clients

LOCKED = "database is locked"
POOL = "handoff-burst"
PROBE_EVERY_S = 1.0
VA_EVERY_S = 3.0


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _postgres_url(name: str) -> str:
    from tests.conftest import PG_ADMIN_URL

    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _create_pg(name: str) -> None:
    from sqlalchemy import create_engine, text

    from tests.conftest import PG_ADMIN_URL

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


class Probes:
    """The UI's flow-run list and a VA's CLI record command, timed while the burst drains."""

    def __init__(self, api: str, env: dict[str, str], va_client: int) -> None:
        self.api, self.env, self.va_client = api, env, va_client
        self.list_s: list[float] = []
        self.cli_s: list[float] = []
        self.cli_failures: list[str] = []
        self.list_failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._list, daemon=True),
                         threading.Thread(target=self._va, daemon=True)]

    def __enter__(self) -> Probes:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _list(self) -> None:
        body = {"sort": "START_TIME_DESC", "limit": 50, "offset": 0}
        with httpx.Client(timeout=120) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    client.post(f"{self.api}/flow_runs/filter", json=body).raise_for_status()
                except httpx.HTTPError as exc:  # a timeout is a sample too: the UI hung
                    self.list_failures.append(f"{type(exc).__name__}: {exc}"[:200])
                self.list_s.append(time.monotonic() - started)
                self._stop.wait(PROBE_EVERY_S)

    def _va(self) -> None:
        notes = 0
        while not self._stop.is_set():
            notes += 1
            started = time.monotonic()
            done = subprocess.run(
                [str(HANDOFF), "followup", "log", str(self.va_client), "--kind", "response",
                 "--note", f"call {notes}"], env=self.env, capture_output=True, text=True,
                timeout=300, check=False)
            self.cli_s.append(time.monotonic() - started)
            if done.returncode:
                self.cli_failures.append(done.stderr.strip()[-300:])
            self._stop.wait(VA_EVERY_S)


def late_seconds(api: str, run_ids: list[str]) -> list[float]:
    """For each run, how long it stayed Late (0 when never)."""
    out = []
    with httpx.Client(timeout=60) as client:
        for run_id in run_ids:
            states = client.get(f"{api}/flow_run_states/",
                                params={"flow_run_id": run_id}).json()
            states.sort(key=lambda s: s["timestamp"])
            late = 0.0
            for here, following in zip(states, [*states[1:], None], strict=True):
                if here["name"] == "Late":
                    end = (dt.datetime.fromisoformat(following["timestamp"]) if following
                           else dt.datetime.now(dt.UTC))
                    late += (end - dt.datetime.fromisoformat(here["timestamp"])).total_seconds()
            out.append(late)
    return out


PREFECT_TABLES = ("flow_run_state", "task_run", "task_run_state", "log", "events",
                  "event_resources", "flow_run_input", "artifact", "automation_bucket")


def rows_per_run(prefect_db: Path, runs: int) -> dict[str, float]:
    """Rows the Prefect server wrote per client run, by table (what its SQLite lock carried)."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"file:{prefect_db}?mode=ro", uri=True)) as conn:
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        return {t: round(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] / runs, 1)
                for t in PREFECT_TABLES if t in present}


def drain(api: str, target: int, started: float, limit_s: float) -> tuple[int, bool]:
    """Wait until `target` runs are Suspended or `limit_s` has passed since `started`, logging
    progress each minute; a slow or failing count is logged, not fatal (the server is busy)."""
    suspended, next_log = 0, 0.0
    while True:
        elapsed = time.monotonic() - started
        try:
            suspended = count_runs(api, "Suspended")
        except httpx.HTTPError as exc:
            log(f"burst: counting Suspended runs failed at {elapsed:.0f}s: {exc}")
        if suspended >= target:
            return suspended, True
        if elapsed >= limit_s:
            return suspended, False
        if elapsed >= next_log:
            log(f"burst: {suspended} of {target} suspended after {elapsed:.0f}s ({load()})")
            next_log += 60
        time.sleep(2)


def bench_burst(clients: int, database: str, max_minutes: float | None = None
                ) -> dict[str, Any]:
    from db.session import dispose_all, session_factory
    from db.settings import get_settings
    from deployments.server import start_server, stop, wait_healthy
    from tests.flow.conftest import always_open_playbook, free_port, start_runner

    home = OUT / f"burst-{database}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_env: dict[str, str] = {}
    app_url = f"sqlite:///{home / 'handoff.db'}"
    if database == "postgres":
        suffix = uuid.uuid4().hex[:8]
        _create_pg(f"burst_prefect_{suffix}")
        _create_pg(f"burst_app_{suffix}")
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = _postgres_url(
            f"burst_prefect_{suffix}").replace("+psycopg", "+asyncpg")
        app_url = _postgres_url(f"burst_app_{suffix}")
        # The pool runs 8 flow runs at once (2 workers x 4); client starts take 6 of them.
        server_env["HANDOFF_RUN_STARTS_IN_FLIGHT"] = "6"
    server = start_server(home / "prefect", port=port, log=home / "server.log",
                          extra_env=server_env)
    env = {**os.environ, "HANDOFF_HOME": str(home), "HANDOFF_DATABASE_URL": app_url,
           "HANDOFF_PLAYBOOK_PATH": str(always_open_playbook(home / "playbook.yaml")),
           "PREFECT_API_URL": api, "PREFECT_UI_URL": api.removesuffix("/api"),
           "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_LOCAL_STORAGE_PATH": str(home / "prefect-results")}
    env.pop("HANDOFF_SMTP_HOST", None)
    env.update({k: v for k, v in server_env.items() if k.startswith("HANDOFF_")})
    result: dict[str, Any] = {"clients": clients, "database": database, "load_before": load()}
    runners: list[subprocess.Popen[bytes]] = []
    try:
        wait_healthy(api, timeout=600, process=server)
        migrated = subprocess.run([str(HANDOFF), "db", "upgrade"], env=env,
                                  capture_output=True, text=True, check=False)
        if migrated.returncode:
            raise RuntimeError(f"handoff db upgrade failed: {migrated.stderr[-2000:]}")
        os.environ.update({k: v for k, v in env.items() if k.startswith(("HANDOFF_", "PREFECT_"))})
        get_settings.cache_clear()
        dispose_all()
        if database == "sqlite":  # the embedded default: `make run`'s runner
            runners.append(start_runner(env, home / "runner.log", limit=int(os.environ.get(
                "HANDOFF_RUN_LIMIT", 8))))
        else:  # scale-out: a process work pool with two workers (deployments/workers.py)
            from deployments.workers import start_worker

            setup = subprocess.run([PY, "-m", "deployments.workers", "setup", "--pool", POOL],
                                   cwd=ROOT, env=env, capture_output=True, text=True,
                                   timeout=600, check=False)
            if setup.returncode:
                raise RuntimeError(f"workers setup failed: {setup.stderr[-2000:]}")
            runners.extend(start_worker(POOL, name=f"burst-{n}", limit=4, env=env,
                                        log=home / f"worker-{n}.log") for n in (1, 2))
            # The VA's machine runs the warm CLI process itself (no `make run` there).
            env["HANDOFF_WARM_CLI_SOCKET"] = f"burst-{os.getpid()}"
            runners.append(subprocess.Popen([PY, "-m", "deployments.warm"], cwd=ROOT, env=env,
                                            stdout=(home / "warm.log").open("wb"),
                                            stderr=subprocess.STDOUT))
        from tests.flow.conftest import wait_for_deployment

        wait_for_deployment(api, "client-onboarding/client-onboarding", timeout=180)
        va_client = new_clients(1, "Recorded")[0]
        ids = new_clients(clients, "Burst")
        log(f"burst: {clients} onboardings recorded; starting them at once (reconcile)")
        started = time.monotonic()
        with Probes(api, env, va_client) as probes:
            done = subprocess.run([str(HANDOFF), "reconcile", "--json"], env=env,
                                  capture_output=True, text=True, timeout=3600, check=False)
            result["reconcile_s"] = round(time.monotonic() - started, 1)
            if done.returncode:
                raise RuntimeError(f"handoff reconcile failed: {done.stderr[-2000:]}")
            limit_s = max_minutes * 60 if max_minutes else 600 + clients * 20
            suspended, complete = drain(api, clients + 1, started, limit_s)
            result.update({"suspended": suspended, "complete": complete,
                           "drain_s": round(time.monotonic() - started, 1)})
            result["seconds_to_all_suspended"] = result["drain_s"] if complete else None
        log(f"burst: {suspended} of {clients + 1} runs suspended after {result['drain_s']:.0f}s"
            + ("" if complete else " (stopped at the time limit)"))
        from sqlalchemy import select

        from db.models import Onboarding

        with session_factory()() as session:
            run_ids = [r for r in session.scalars(select(Onboarding.flow_run_id).where(
                Onboarding.id.in_(ids))) if r]
        late = late_seconds(api, run_ids)
        server_log = (home / "server.log").read_text(errors="replace")
        result.update({
            "runs": len(run_ids),
            "database_locked": server_log.count(LOCKED),
            "late_runs": sum(1 for s in late if s > 0), "late_max_s": round(max(late), 1),
            "list_s": {"median": median(probes.list_s), "p99": p99(probes.list_s),
                       "max": max(probes.list_s), "n": len(probes.list_s)},
            "cli_s": {"median": median(probes.cli_s), "p99": p99(probes.cli_s),
                      "max": max(probes.cli_s), "n": len(probes.cli_s)},
            "cli_failures": probes.cli_failures[:3], "list_failures": probes.list_failures[:3],
            "load_after": load()})
        if database == "sqlite":
            result["prefect_rows_per_run"] = rows_per_run(home / "prefect" / "prefect.db",
                                                          clients + 1)
    finally:
        for runner in runners:
            stop(runner)
        stop(server)
        dispose_all()
    return result


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--burst-clients", type=int, default=200,
                        help="onboardings started at once")
    parser.add_argument("--burst-db", default="sqlite,postgres",
                        help="sqlite (the embedded default), postgres (scale-out), or both")
    parser.add_argument("--burst-max-minutes", type=float, default=None,
                        help="stop waiting after this long and report what drained (default: "
                             "10 min + 20 s per client)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    clients = min(args.burst_clients, 30) if args.quick else args.burst_clients
    return {db: bench_burst(clients, db, args.burst_max_minutes)
            for db in args.burst_db.split(",")}


def table(b: dict[str, Any]) -> list[str]:
    lines = ["**Burst of starts** (N onboardings started at once by `handoff reconcile`; the "
             "UI's flow-run list probed every second, a VA's `handoff followup log` every 3 s)",
             "", "| Prefect database | runs | all Suspended after | \"database is locked\" | "
             "flow-run list p99 (max) | CLI record p99 (max) | runs Late (longest) | load |",
             "|---|---|---|---|---|---|---|---|"]
    for db, r in b.items():
        drained = (f"{r['drain_s']:.0f} s" if r.get("complete", True) else
                   f"not all: {r['suspended']} of {r['clients'] + 1} after {r['drain_s']:.0f} s")
        lines.append(
            f"| {db} | {r['runs']} | {drained} | "
            f"{r['database_locked']} | {fmt(r['list_s']['p99'])} s ({fmt(r['list_s']['max'])})"
            f" | {fmt(r['cli_s']['p99'])} s ({fmt(r['cli_s']['max'])}) | {r['late_runs']} "
            f"({r['late_max_s']:.0f} s) | {r['load_before']} → {r['load_after']} |")
    return lines


PART = Part(name="burst", run=run, table=table, order=60, default=False, arguments=arguments)
