"""`python -m deployments.serve` owns the Prefect server it starts: it refuses a port taken by
something else, Ctrl-C stops the server before it says "stopped", and a SIGKILL of the serving
process takes its server with it (no orphan for the next start to pick up silently). The runs the
runner starts run at a lower CPU priority; the runner, which polls for them, and the server it
started do not."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from deployments.server import port_in_use
from tasks.prefect.offline import OFFLINE
from tests.flow.conftest import ROOT, free_port, wait_for_deployment


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def niceness(pid: int) -> int:
    """The nice value of a process's main thread (field 19 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def run_niceness(runner: int) -> list[int]:
    """The nice values of the flow-run processes the runner holds now (multiprocessing spawns
    each run; the warm CLI process beside it is not one)."""
    seen = []
    for child in psutil.Process(runner).children():
        try:
            if "multiprocessing.spawn" in " ".join(child.cmdline()):
                seen.append(niceness(child.pid))
        except (psutil.NoSuchProcess, FileNotFoundError):
            pass
    return seen


def wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Serve:
    """One `python -m deployments.serve` in its own session, as a terminal starts it."""

    def __init__(self, home: Path, port: int) -> None:
        self.log = home / f"serve-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "HANDOFF"))}
        # Its warm CLI process on a socket of its own, not the one the suite's commands find.
        env.update(HANDOFF_HOME=str(home), HANDOFF_WARM_CLI_SOCKET=f"serve-{port}", **OFFLINE)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deployments.serve", "--port", str(port), "--limit", "2"],
            cwd=ROOT, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def server_pid(self) -> int:
        wait_for("the serve process to say it is running",
                 lambda: "handoff is running" in self.output or self.process.poll() is not None,
                 timeout=240)
        assert self.process.poll() is None, self.output
        match = re.search(r"Prefect server on 127\.0\.0\.1:\d+ \(pid (\d+)", self.output)
        assert match, self.output
        return int(match.group(1))

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.kill()


@pytest.mark.flow
def test_serve_owns_its_prefect_server(tmp_path: Path, served: list[Serve]) -> None:
    port = free_port()
    first = Serve(tmp_path, port)
    served.append(first)
    server = first.server_pid()
    assert alive(server) and port_in_use(port)
    # Every run the runner starts yields the CPU; the runner itself and the Prefect server it
    # started do not.
    api = f"http://127.0.0.1:{port}/api"
    wait_for_deployment(api, "start-queued-runs/start-queued-runs", timeout=120)
    deployment = httpx.get(f"{api}/deployments/name/start-queued-runs/start-queued-runs",
                           timeout=10).json()
    httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", json={},
               timeout=10).raise_for_status()
    seen: set[int] = set()

    def a_run_yields() -> bool:
        seen.update(run_niceness(first.process.pid))
        return 10 in seen

    wait_for("a run process at the runs' priority", a_run_yields, timeout=120)
    assert niceness(first.process.pid) == niceness(server) == os.getpriority(
        os.PRIO_PROCESS, 0) < 10
    # Its warm CLI process answers `handoff` (counted when it stops, below).
    wait_for("the warm CLI", lambda: "warm CLI: ready" in first.output, timeout=120)
    helped = subprocess.run([str(Path(sys.executable).with_name("handoff")), "--help"],
                            env={**os.environ, "HANDOFF_WARM_CLI_SOCKET": f"serve-{port}"},
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "onboard" in helped.stdout

    # The port is taken by something this command did not start: one line, exit 2, no "ready".
    second = subprocess.run(
        [sys.executable, "-m", "deployments.serve", "--port", str(port)], cwd=ROOT,
        env={**os.environ, "HANDOFF_HOME": str(tmp_path / "other")}, capture_output=True,
        text=True, timeout=60)
    assert second.returncode == 2
    assert second.stderr.strip().count("\n") == 0 and "already in use" in second.stderr
    assert str(port) in second.stderr and "ready" not in second.stdout

    # Ctrl-C reaches the whole group; "stopped" is printed only once the server is gone.
    os.killpg(first.process.pid, signal.SIGINT)
    first.process.wait(90)
    assert "Prefect server stopped." in first.output
    assert "warm CLI: stopped after 1 commands" in first.output
    assert not alive(server) and not port_in_use(port)

    # SIGKILL of the serving process alone: its server dies with it, the port is free again.
    third = Serve(tmp_path, port)
    served.append(third)
    server = third.server_pid()
    third.process.send_signal(signal.SIGKILL)
    third.process.wait(10)
    wait_for("the orphaned server to exit", lambda: not alive(server), timeout=60)
    wait_for("the port to be free", lambda: not port_in_use(port), timeout=30)
    with socket.socket() as probe:  # and a new server could take it
        probe.bind(("127.0.0.1", port))
