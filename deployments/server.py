"""Starting a local Prefect server: the embedded default of `make run`, and the test fixture."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

OFFLINE = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}

# Server loop services handoff does not use; late runs, pause expirations, the scheduler and the
# task-run recorder stay on (schedules, suspended-run forms and the UI's task list need them).
UNUSED_SERVICES = ("FOREMAN", "CANCELLATION_CLEANUP", "REPOSSESSOR")


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
    return env


def start_server(prefect_home: Path, *, port: int, log: Path,
                 extra_env: dict[str, str] | None = None,
                 services_off: tuple[str, ...] = UNUSED_SERVICES) -> subprocess.Popen[bytes]:
    """Start `prefect server start` in the background; the caller waits with wait_healthy."""
    prefect_home.mkdir(parents=True, exist_ok=True)
    env = {**server_env(prefect_home, port=port, services_off=services_off), **(extra_env or {})}
    prefect = Path(sys.executable).with_name("prefect")
    handle = log.open("ab")
    return subprocess.Popen(
        [str(prefect), "server", "start", "--host", env["PREFECT_SERVER_API_HOST"],
         "--port", str(port)],
        env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
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


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Stop a process group politely, then firmly."""
    import signal

    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=5)
