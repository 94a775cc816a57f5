"""Starting a local Prefect server: the embedded default of `make run`, and the test fixture."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tasks.prefect.offline import OFFLINE

# Server loop services handoff does not use; late runs, pause expirations, the scheduler and the
# task-run recorder stay on (schedules, suspended-run forms and the UI's task list need them).
UNUSED_SERVICES = ("FOREMAN", "CANCELLATION_CLEANUP", "REPOSSESSOR")

# The embedded server writes to one SQLite file under one lock. Out of the box the task-run
# recorder commits each task-run event in its own transaction (batch size 1) and the event
# persister reads events one at a time; in a burst those commits queue on the lock behind the
# runner's state changes. Batched, the same rows cost a few transactions per flush (on
# PostgreSQL too, where it only saves round trips).
SERVICE_BATCHING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "2",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    # A paced start is picked up within the runner's 1 s poll; marking a run Late after 15 s (the
    # default) only adds state writes in a burst, each in a deferred transaction, the kind that
    # failed with "database is locked". A run not taken within a minute is still shown Late.
    "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "60",
}


def server_env(prefect_home: Path, *, port: int, host: str = "127.0.0.1",
               services_off: tuple[str, ...] = UNUSED_SERVICES) -> dict[str, str]:
    """Environment for a `prefect server start` bound to loopback, with its own home."""
    env = {**os.environ, **OFFLINE,
           "PREFECT_HOME": str(prefect_home),
           "PREFECT_SERVER_API_HOST": host,
           "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_API_URL": f"http://{host}:{port}/api",
           "PREFECT_UI_URL": f"http://{host}:{port}"}
    for name in services_off:
        env[f"PREFECT_SERVER_SERVICES_{name}_ENABLED"] = "false"
    return {**SERVICE_BATCHING, **env}  # a setting already in the environment wins


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on host:port (a bind test, as the server would do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In the child, before exec: Linux sends it `sig` when its parent dies, however it dies
    (a SIGKILL included), so a server started for a process never outlives it (0: no more)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig)


def start_server(prefect_home: Path, *, port: int, log: Path,
                 extra_env: dict[str, str] | None = None,
                 services_off: tuple[str, ...] = UNUSED_SERVICES,
                 owned: bool = False) -> subprocess.Popen[bytes]:
    """Start `prefect server start` in the background; the caller waits with wait_healthy.

    `owned`: the server belongs to the calling process (`deployments.serve`): it stays in the
    caller's process group (Ctrl-C and a kill of the group reach it) and dies with the caller.
    Otherwise (test fixtures) it gets its own session and the caller stops it with `stop`.
    """
    prefect_home.mkdir(parents=True, exist_ok=True)
    env = {**server_env(prefect_home, port=port, services_off=services_off), **(extra_env or {})}
    prefect = Path(sys.executable).with_name("prefect")
    handle = log.open("ab")
    return subprocess.Popen(
        [str(prefect), "server", "start", "--host", env["PREFECT_SERVER_API_HOST"],
         "--port", str(port)],
        env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=not owned,
        preexec_fn=die_with_parent if owned else None,
    )


def auth_headers() -> dict[str, str]:
    """Basic-auth header when the server is protected (PREFECT_API_AUTH_STRING)."""
    import base64

    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}


def wait_healthy(api_url: str, timeout: float = 90.0,
                 process: subprocess.Popen[bytes] | None = None) -> float:
    """Block until the API answers /health; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"Prefect server exited with code {process.returncode}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2, headers=auth_headers()).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"Prefect server at {api_url} not healthy after {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> bool:
    """Stop the server politely, then firmly (its whole session when it leads one); returns
    whether it has exited."""
    if process.poll() is not None:
        return True
    leads_group = os.getpgid(process.pid) == process.pid

    def send(sig: signal.Signals) -> None:
        try:
            os.killpg(process.pid, sig) if leads_group else process.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return False
    return True
