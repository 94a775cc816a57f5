"""What the parts that need live pieces share: new onboardings, a real Prefect server with the
handoff runner, and probes for its runs and processes."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from tests.bench.common import HANDOFF


def count_runs(api: str, state_name: str) -> int:
    import httpx

    response = httpx.post(f"{api}/flow_runs/count", timeout=30, json={
        "flow_runs": {"state": {"name": {"any_": [state_name]}}}})
    response.raise_for_status()
    return int(response.json())


def tree(pid: int) -> tuple[int, float]:
    """(child processes, RSS MiB of the process and its children): the runs a runner holds.

    Neither the warm CLI process `serve` starts beside the runner (and the commands it forks)
    nor multiprocessing's resource tracker (started with the first run the runner spawns) is
    one: each is there whether clients wait or not, and counted in neither."""
    try:
        parent = psutil.Process(pid)
        children = [process for child in parent.children() if not _beside_runs(child)
                    for process in (child, *_descendants(child))]
        rss = parent.memory_info().rss
        for child in children:
            try:
                rss += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return len(children), rss / 2**20
    except psutil.NoSuchProcess:
        return 0, 0.0


def _beside_runs(process: psutil.Process) -> bool:
    try:
        command = " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False
    return "deployments.warm" in command or "multiprocessing.resource_tracker" in command


def _descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return list(process.children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def wait_for(what: str, probe: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if probe():
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def new_clients(n: int, prefix: str) -> list[int]:
    from db.playbook import get_playbook
    from db.session import session_factory
    from tasks.onboarding import records

    playbook = get_playbook()
    ids = []
    with session_factory()() as session, session.begin():
        for i in range(n):
            new = records.NewOnboarding.parse(
                client=f"{prefix} {i + 1}", segment="smb", offer="Growth",
                owner="va@northwind.example", backup="va2@northwind.example",
                contacts=[f"pat@{prefix.lower()}{i + 1}.example"],
                closed_at=dt.datetime.now(dt.UTC), kickoff_by=None, first_milestone=None)
            ids.append(records.create_onboarding(session, playbook, new, actor="bench").id)
    return ids


@contextmanager
def prefect_stack(home: Path, *, prefect_db: str | None = None, app_db: str | None = None,
                  ) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[bytes]]]:
    """A real Prefect server and the handoff runner, with their own app database (SQLite
    files under `home`, or the PostgreSQL databases named by these URLs: the scale-out set-up)."""
    from deployments.server import start_server, stop, wait_healthy
    from tests.flow.conftest import (
        TEST_SERVICES_OFF,
        always_open_playbook,
        free_port,
        start_runner,
        wait_for_deployment,
    )

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = start_server(home / "prefect", port=port, log=home / "server.log",
                          services_off=TEST_SERVICES_OFF,
                          extra_env={"PREFECT_SERVER_UI_ENABLED": "false",
                                     **({"PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_db}
                                        if prefect_db else {})})
    env = {**os.environ,
           "HANDOFF_HOME": str(home), "HANDOFF_DATABASE_URL": app_db or f"sqlite:///{home / 'handoff.db'}",
           "HANDOFF_PLAYBOOK_PATH": str(always_open_playbook(home / "playbook.yaml")),
           "PREFECT_API_URL": api, "PREFECT_UI_URL": api.removesuffix("/api"),
           "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_LOCAL_STORAGE_PATH": str(home / "prefect-results")}
    env.pop("HANDOFF_SMTP_HOST", None)
    runner = None
    try:
        wait_healthy(api, timeout=120, process=server)
        subprocess.run([str(HANDOFF), "db", "upgrade"], env=env, check=True,
                       capture_output=True)
        os.environ.update({k: v for k, v in env.items()
                           if k.startswith(("HANDOFF_", "PREFECT_"))})
        from db.settings import get_settings

        get_settings.cache_clear()
        runner = start_runner(env, home / "runner.log", limit=6)
        wait_for_deployment(api, "client-onboarding/client-onboarding", timeout=120)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # Prefect read its settings when this process imported it: point its client here.
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield api, env, runner
    finally:
        if runner is not None:
            stop(runner)
        stop(server)


