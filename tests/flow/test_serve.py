"""`python -m deployments.serve` owns the Prefect server it starts: it refuses a port taken by
something else, Ctrl-C stops the server before it says "stopped", and a SIGKILL of the serving
process takes its server with it (no orphan for the next start to pick up silently). The runner
runs at a lower CPU priority than the server it started."""

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

import pytest

from deployments.server import port_in_use
from tasks.prefect.offline import OFFLINE
from tests.flow.conftest import ROOT, free_port


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
    # The runner (and every run it starts) yields the CPU; the Prefect server it started does not.
    wait_for("the runner to lower its priority", lambda: niceness(first.process.pid) == 10,
             timeout=120)
    assert niceness(server) == os.getpriority(os.PRIO_PROCESS, 0) < 10
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
