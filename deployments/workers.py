"""Scale-out: every handoff deployment on a Prefect `process` work pool, run by many workers.

    python -m deployments.workers setup [--pool handoff] [--pool-limit 8] [--onboarding-limit 50]
    python -m deployments.workers worker [--pool handoff] [--limit 4] [--name NAME]

`setup` creates (or updates) the work pool with its concurrency limit and deploys every deployment
declared in deployments/serve.py to it — same names, schedules, timezones and per-deployment
limits — loaded from this project directory (no image is built). `worker` starts one
`prefect worker start` on the pool; start as many as the machines hold. The Prefect server and
the app database are whatever PREFECT_API_URL and HANDOFF_DATABASE_URL point at (PostgreSQL for
more than one worker). Sweeps are guarded twice: `concurrency_limit=1` on their deployments and a
database lease (db/lease.py), so two workers never run the same sweep at once.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

from db.settings import get_settings
from deployments.priority import lower_run_priority
from deployments.serve import RUNNER_ENV, configure_runner_env, deployments
from tasks.prefect.offline import stay_offline

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POOL = "handoff"
# Flow runs executing at once across every worker of the pool (suspended runs hold none).
DEFAULT_POOL_LIMIT = 8
# Onboarding runs executing at once; a suspended run releases its slot.
DEFAULT_ONBOARDING_LIMIT = 50
# A worker asks the server for work this often (seconds); Prefect's default is 10.
WORKER_POLL_SECONDS = "2"


def ensure_pool(name: str, limit: int) -> str:
    """Create the `process` work pool, or set its concurrency limit; returns what was done."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=name, type="process", concurrency_limit=limit,
                description="handoff: client onboardings, sweeps and reports"))
            return "created"
        if pool.type != "process":
            raise SystemExit(f"work pool {name!r} exists with type {pool.type!r}; handoff "
                             "needs a 'process' pool: pick another --pool name")
        client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit))
        return "updated"


def deploy_all(pool: str, onboarding_limit: int) -> list[str]:
    """Deploy every handoff deployment to the pool from this directory; returns their names."""
    from prefect import Flow

    configure_runner_env()
    env = {key: os.environ[key] for key in RUNNER_ENV}
    # Resumed runs re-execute from the top and read what earlier runs persisted: every worker
    # must see the same result storage (a shared path, or a remote storage block).
    env["PREFECT_LOCAL_STORAGE_PATH"] = os.environ["PREFECT_LOCAL_STORAGE_PATH"]
    names = []
    specs: list[Any] = deployments()
    for spec in specs:
        entrypoint, name = str(spec.entrypoint), str(spec.name)
        limit = spec.concurrency_limit
        if name == "client-onboarding":
            limit = onboarding_limit
        flow: Any = Flow.from_source(source=str(PROJECT_ROOT), entrypoint=entrypoint)
        flow.deploy(
            name=name, work_pool_name=pool, build=False, push=False, print_next_steps=False,
            schedules=spec.schedules, concurrency_limit=limit, tags=spec.tags,
            description=spec.description,
            job_variables={"env": env, "working_dir": str(PROJECT_ROOT)},
        )
        names.append(f"{flow.name}/{name}")
    return names


def setup(pool: str, pool_limit: int, onboarding_limit: int) -> list[str]:
    """The pool, every deployment on it, and the zombie-run automation."""
    from deployments.automations import ensure_zombie_automation

    configure_runner_env()
    done = ensure_pool(pool, pool_limit)
    names = deploy_all(pool, onboarding_limit)
    ensure_zombie_automation(int(os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]))
    return [f"work pool {pool!r} {done} (concurrency limit {pool_limit})",
            *[f"deployed {n}" for n in names]]


def worker_command(pool: str, *, name: str | None = None, limit: int | None = None) -> list[str]:
    """The `prefect worker start` command line for one worker on the pool."""
    prefect = str(Path(sys.executable).with_name("prefect"))
    command = [prefect, "worker", "start", "--pool", pool, "--type", "process",
               "--name", name or f"handoff-{socket.gethostname()}-{os.getpid()}"]
    if limit:
        command += ["--limit", str(limit)]
    return command


def worker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a worker: the caller's, plus a 2-second poll and no telemetry."""
    env = dict(base if base is not None else os.environ)
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", WORKER_POLL_SECONDS)
    stay_offline(env)
    return env


def start_worker(pool: str, *, name: str, log: Path, limit: int | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start one worker in the background, in its own process group (stop with server.stop),
    at the runs' lower CPU priority."""
    handle = log.open("ab")
    niceness = get_settings().run_niceness
    return subprocess.Popen(worker_command(pool, name=name, limit=limit), cwd=PROJECT_ROOT,
                            env=worker_env(env), stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True,
                            preexec_fn=partial(lower_run_priority, niceness))


def main(argv: list[str] | None = None) -> int:
    """`setup` the pool and deployments, or run one `worker` in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m deployments.workers")
    sub = parser.add_subparsers(dest="command", required=True)
    setup_cmd = sub.add_parser("setup", help="create the work pool and deploy everything to it")
    setup_cmd.add_argument("--pool", default=DEFAULT_POOL)
    setup_cmd.add_argument("--pool-limit", type=int, default=DEFAULT_POOL_LIMIT,
                           help="flow runs executing at once across all workers")
    setup_cmd.add_argument("--onboarding-limit", type=int, default=DEFAULT_ONBOARDING_LIMIT,
                           help="onboarding runs executing at once (suspended ones hold none)")
    worker_cmd = sub.add_parser("worker", help="start one worker on the pool (foreground)")
    worker_cmd.add_argument("--pool", default=DEFAULT_POOL)
    worker_cmd.add_argument("--limit", type=int, default=None,
                            help="flow runs this worker executes at once")
    worker_cmd.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    if "PREFECT_API_URL" not in os.environ:
        raise SystemExit("set PREFECT_API_URL to the Prefect server, e.g. "
                         "http://prefect.internal:4200/api")
    if args.command == "setup":
        for line in setup(args.pool, args.pool_limit, args.onboarding_limit):
            print(line)
        return 0
    configure_runner_env()
    lower_run_priority(get_settings().run_niceness)  # the worker and the runs it starts
    os.execve(worker_command(args.pool, name=args.name, limit=args.limit)[0],
              worker_command(args.pool, name=args.name, limit=args.limit), worker_env())
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
