"""One real Prefect server per test session, a real runner serving the deployments, a real
SMTP server on loopback, and an app database the runner and the CLI share."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from deployments.server import start_server, stop, wait_healthy
from tests.imap_server import ImapAccount, LoopbackImap
from tests.smtp_server import LoopbackSmtp

ROOT = Path(__file__).resolve().parents[2]
HANDOFF = Path(sys.executable).with_name("handoff")

# Services the flow tests do not need: no schedules fire, no automations, no late-run marking.
TEST_SERVICES_OFF = ("SCHEDULER", "LATE_RUNS", "FOREMAN", "CANCELLATION_CLEANUP", "REPOSSESSOR",
                     "TRIGGERS", "EVENT_PERSISTER")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def always_open_playbook(path: Path) -> Path:
    """The shipped playbook with a 24/7 calendar, so client mail is never deferred in tests."""
    raw = yaml.safe_load((ROOT / "deployments" / "playbook.yaml").read_text())
    raw["calendar"] = {"timezone": "UTC", "workdays": ["mon", "tue", "wed", "thu", "fri", "sat",
                                                       "sun"],
                       "hours": {"start": "00:00", "end": "23:59:59.999999"},
                       "holidays": {"country": None}, "closed_dates": []}
    path.write_text(yaml.safe_dump(raw))
    return path


@dataclass
class PrefectServer:
    api_url: str
    process: subprocess.Popen[bytes]
    home: Path


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server (SQLite), shared by every flow test."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    process = start_server(home, port=port, log=home / "server.log",
                           services_off=TEST_SERVICES_OFF,
                           extra_env={"PREFECT_SERVER_UI_ENABLED": "false"})
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(api, timeout=300, process=process)  # a loaded 2-core machine is slow
    except Exception:
        stop(process)
        print((home / "server.log").read_text()[-3000:])
        raise
    yield PrefectServer(api_url=api, process=process, home=home)
    stop(process)


@pytest.fixture(scope="session")
def smtp() -> Iterator[LoopbackSmtp]:
    """A real SMTP server on loopback, shared by the flow tests."""
    with LoopbackSmtp() as server:
        yield server


@dataclass
class Stack:
    """Everything a flow test drives: env for the CLI, the runner, the mail and the database."""

    env: dict[str, str]
    db_url: str
    api_url: str
    smtp: LoopbackSmtp
    runner: subprocess.Popen[bytes]
    home: Path
    imap: LoopbackImap | None = None
    mailbox: ImapAccount | None = None

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(HANDOFF), *args], capture_output=True, text=True,
                                env=self.env, timeout=120)
        if ok:
            assert result.returncode == 0, result.stderr
        return result


def start_runner(env: dict[str, str], log: Path, limit: int = 10) -> subprocess.Popen[bytes]:
    """`python -m deployments.serve --no-server` against the test server."""
    handle = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "deployments.serve", "--no-server", "--limit",
                             str(limit)], cwd=ROOT, env=env, stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True)


def handoff_env(home: Path, *, smtp_port: int, api_url: str, **extra: str) -> dict[str, str]:
    """Environment for the runner and the CLI: app database, 24/7 playbook, SMTP, Prefect."""
    return {**os.environ,
            "HANDOFF_HOME": str(home), "HANDOFF_DATABASE_URL": f"sqlite:///{home / 'handoff.db'}",
            "HANDOFF_PLAYBOOK_PATH": str(always_open_playbook(home / "playbook.yaml")),
            "HANDOFF_SMTP_HOST": "127.0.0.1", "HANDOFF_SMTP_PORT": str(smtp_port),
            "HANDOFF_SMTP_STARTTLS": "false", "HANDOFF_SMTP_SSL": "false",
            "HANDOFF_SMTP_TIMEOUT": "10",
            "PREFECT_API_URL": api_url, "PREFECT_UI_URL": api_url.removesuffix("/api"),
            # The runner starts the client portal (deployments/web) on its own free port.
            "HANDOFF_PORTAL_PORT": str(free_port()),
            # Runs at normal priority here: the suite's other worker is not a VA to yield to,
            # and starved runs would only stretch the flow tests (test_serve checks the nice).
            "HANDOFF_RUN_NICENESS": "0",
            # No warm CLI process: the suite's `handoff` calls run as they are written
            # (tests/cli/test_warm.py tests that path on a socket of its own).
            "HANDOFF_WARM_CLI": "false",
            **extra}


def wait_for_deployment(api_url: str, name: str, timeout: float = 90,
                        headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    flow, deployment = name.split("/")
    while time.monotonic() < deadline:
        response = httpx.get(f"{api_url}/deployments/name/{flow}/{deployment}", timeout=5,
                             headers=headers or {})
        if response.status_code == 200:
            return
        time.sleep(0.5)
    raise TimeoutError(f"deployment {name} never appeared")


@pytest.fixture(scope="session")
def stack(prefect_server: PrefectServer, smtp: LoopbackSmtp, imap_server: LoopbackImap,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The runner serving every deployment, with its own app database, mail and mailbox."""
    home = tmp_path_factory.mktemp("handoff-home")
    mailbox = imap_server.add_user()
    env = handoff_env(home, smtp_port=smtp.port, api_url=prefect_server.api_url,
                      PREFECT_HOME=str(prefect_server.home),
                      PREFECT_LOCAL_STORAGE_PATH=str(home / "prefect-results"),
                      **imap_server.env(mailbox))
    db_url = env["HANDOFF_DATABASE_URL"]
    subprocess.run([str(HANDOFF), "db", "upgrade"], env=env, check=True, capture_output=True)
    runner = start_runner(env, home / "runner.log")
    try:
        wait_for_deployment(prefect_server.api_url, "client-onboarding/client-onboarding")
    except Exception:
        stop(runner)
        print((home / "runner.log").read_text()[-3000:])
        raise
    stack = Stack(env=env, db_url=db_url, api_url=prefect_server.api_url, smtp=smtp,
                  runner=runner, home=home, imap=imap_server, mailbox=mailbox)
    yield stack
    stop(stack.runner)
