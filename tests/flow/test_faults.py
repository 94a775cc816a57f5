"""Faults and access on real components: an auth-protected Prefect server that goes down, a
runner killed with SIGKILL mid-run. Nothing recorded is lost and no message is sent twice."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from deployments.server import start_server, stop, wait_healthy
from tests.flow.conftest import (
    Stack,
    free_port,
    handoff_env,
    start_runner,
    wait_for_deployment,
)
from tests.flow.test_onboarding_flow import mail_to, onboard, stage_of, wait_until
from tests.imap_server import LoopbackImap
from tests.smtp_server import LoopbackSmtp

AUTH = "handoff-admin:s3cret-for-tests"
IMAP_SECRET = "imap-pw-never-logged"
AUTH_HEADER = {"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}
# Automations (triggers) and event persistence stay on here: the zombie automation needs them.
FAULT_SERVICES_OFF = ("SCHEDULER", "LATE_RUNS", "FOREMAN", "CANCELLATION_CLEANUP", "REPOSSESSOR")


class FaultStack(Stack):
    port: int
    prefect_home: Path
    server: subprocess.Popen[bytes]

    def start_server(self) -> None:
        self.server = start_server(self.prefect_home, port=self.port,
                                   log=self.prefect_home / "server.log",
                                   services_off=FAULT_SERVICES_OFF,
                                   extra_env={"PREFECT_SERVER_API_AUTH_STRING": AUTH,
                                              "PREFECT_API_AUTH_STRING": AUTH,
                                              "PREFECT_SERVER_UI_ENABLED": "false"})
        os.environ["PREFECT_API_AUTH_STRING"] = AUTH  # for wait_healthy's header
        try:
            wait_healthy(self.api_url, timeout=120, process=self.server)
        finally:
            del os.environ["PREFECT_API_AUTH_STRING"]

    def restart_runner(self) -> None:
        self.runner = start_runner(self.env, self.home / "runner.log")
        wait_for_deployment(self.api_url, "client-onboarding/client-onboarding",
                            headers=AUTH_HEADER)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory,
           imap_server: LoopbackImap) -> Iterator[FaultStack]:
    home = tmp_path_factory.mktemp("fault-home")
    mailbox = imap_server.add_user(password=IMAP_SECRET)
    prefect_home = home / "prefect"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    smtp = LoopbackSmtp(username="mailer", password="smtp-pw-never-logged")
    smtp.__enter__()
    env = handoff_env(home, smtp_port=smtp.port, api_url=api,
                      HANDOFF_SMTP_USERNAME="mailer", HANDOFF_SMTP_PASSWORD="smtp-pw-never-logged",
                      PREFECT_API_AUTH_STRING=AUTH, PREFECT_HOME=str(prefect_home),
                      PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30", **imap_server.env(mailbox))
    db_url = env["HANDOFF_DATABASE_URL"]
    stack = FaultStack(env=env, db_url=db_url, api_url=api, smtp=smtp,
                       runner=None, home=home, imap=imap_server,  # type: ignore[arg-type]
                       mailbox=mailbox)
    stack.port, stack.prefect_home = port, prefect_home
    stack.start_server()
    stack.cli("db", "upgrade")
    stack.restart_runner()
    yield stack
    stop(stack.runner)
    stop(stack.server)
    smtp.__exit__(None, None, None)


def _get(stack: Stack, path: str) -> httpx.Response:
    return httpx.get(f"{stack.api_url}{path}", headers=AUTH_HEADER, timeout=10)


def authed_state(stack: Stack, run_id: str) -> dict[str, object]:
    return _get(stack, f"/flow_runs/{run_id}").json()["state"]  # type: ignore[no-any-return]


@pytest.mark.flow
def test_unauthenticated_api_is_refused_and_flows_still_work(faults: FaultStack) -> None:
    refused = httpx.post(f"{faults.api_url}/flow_runs/filter", json={}, timeout=10)
    assert refused.status_code == 401
    allowed = httpx.post(f"{faults.api_url}/flow_runs/filter", json={}, headers=AUTH_HEADER,
                         timeout=10)
    assert allowed.status_code == 200

    ob_id, run_id = onboard(faults, "Authed Co")
    wait_until("suspended", lambda: authed_state(faults, run_id)["name"] == "Suspended")
    faults.cli("artifact", "add", str(ob_id), "deal_terms_confirmed",
               "scope_and_timeline_captured", "onboarding_owner_assigned")
    wait_until("intake", lambda: stage_of(faults, ob_id) == "intake_completion:active")
    # Events flow through the authenticated websocket too: the server stored the run's events.
    events = httpx.post(f"{faults.api_url}/events/filter", headers=AUTH_HEADER, timeout=10,
                        json={"filter": {"any_resource": {"id": [f"prefect.flow-run.{run_id}"]}},
                              "limit": 50})
    assert events.status_code == 200
    names = {e["event"] for e in events.json()["events"]}
    assert "prefect.flow-run.Suspended" in names and "prefect.flow-run.Running" in names

    # The inbox sweep logs in to the mailbox with its own password, from the same runner.
    with temporary_settings(updates={PREFECT_API_URL: faults.api_url,
                                     PREFECT_API_AUTH_STRING: AUTH}):
        inbox_run = str(run_deployment("inbox-sweep/inbox-sweep", timeout=0).id)  # type: ignore[union-attr]
    wait_until("inbox sweep done", lambda: authed_state(faults, inbox_run)["type"] in (
        "COMPLETED", "FAILED", "CRASHED"), timeout=180)
    assert authed_state(faults, inbox_run)["type"] == "COMPLETED"

    # Secrets never leak: not in the event log, flow-run parameters, logs, artifacts or mail.
    db = Path(faults.db_url.split("///", 1)[1]).read_bytes()
    for secret in ("smtp-pw-never-logged", IMAP_SECRET):
        assert secret.encode() not in db
        for run_id_ in (run_id, inbox_run):
            run = _get(faults, f"/flow_runs/{run_id_}").json()
            assert secret not in str(run["parameters"])
            # The runner ships logs in batches: a run can complete before its lines land.
            logs = wait_until("the run's logs", lambda r=run_id_: _logs_of(faults, r), timeout=60)
            assert secret not in logs, "a secret in the run's logs"
        artifacts = httpx.post(f"{faults.api_url}/artifacts/filter", headers=AUTH_HEADER,
                               timeout=10, json={})
        assert secret not in artifacts.text
        assert all(secret.encode() not in m.raw for m in faults.smtp.messages)
        assert secret not in (faults.home / "runner.log").read_text()
    wait_until("intake request mailed", lambda: len(mail_to(faults, "Authed Co")) == 2)
    assert faults.smtp.messages and all(m.login == "mailer" for m in faults.smtp.messages)


def _logs_of(faults: FaultStack, run_id: str) -> str | None:
    """The run's log lines as the API returns them, or None while it has none."""
    logs = httpx.post(f"{faults.api_url}/logs/filter", headers=AUTH_HEADER, timeout=10,
                      json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    assert logs.status_code == 200
    return logs.text if logs.json() else None


@pytest.mark.flow
def test_prefect_down_fact_kept_and_reconcile_catches_up(faults: FaultStack) -> None:
    ob_id, run_id = onboard(faults, "Outage Ltd")
    wait_until("suspended", lambda: authed_state(faults, run_id)["name"] == "Suspended")
    stop(faults.server)
    result = faults.cli("artifact", "add", str(ob_id), "deal_terms_confirmed",
                        "scope_and_timeline_captured", "onboarding_owner_assigned")
    assert "Prefect server not reachable" in result.stdout
    assert "reconcile flow will catch the run up" in result.stdout
    assert stage_of(faults, ob_id) == "close_confirmation:active"  # recorded, not yet advanced
    faults.start_server()
    wait_until("the run is still suspended after the restart",
               lambda: authed_state(faults, run_id)["name"] == "Suspended")
    first = faults.cli("reconcile", "--json")
    assert f"{ob_id}" in first.stdout and '"resumed"' in first.stdout
    wait_until("intake after reconcile",
               lambda: stage_of(faults, ob_id) == "intake_completion:active")
    wait_until("suspended in intake", lambda: authed_state(faults, run_id)["name"] == "Suspended"
               and authed_state(faults, run_id)["state_details"]["pause_key"]  # type: ignore[index]
               == "intake-completion-0")
    second = faults.cli("reconcile", "--json")
    assert '"resumed": []' in second.stdout and '"started": []' in second.stdout
    assert '"restarted": []' in second.stdout
    subjects = mail_to(faults, "Outage Ltd")
    assert len(subjects) == len(set(subjects)) == 2, subjects  # welcome + intake request


@pytest.mark.flow
def test_runner_killed_mid_run_is_crashed_and_restarted(faults: FaultStack) -> None:
    # A slow mail server holds the run inside its first stage long enough to kill it there,
    # with the welcome claimed for sending but not yet handed to SMTP.
    faults.smtp.greeting_delay = 8.0
    try:
        ob_id, run_id = onboard(faults, "Sigkill Inc")
        wait_until("the run is executing",
                   lambda: authed_state(faults, run_id)["type"] == "RUNNING", timeout=60)
        time.sleep(2)
        os.killpg(faults.runner.pid, signal.SIGKILL)  # runner and its flow process, no goodbye
        faults.runner.wait(timeout=10)
    finally:
        faults.smtp.greeting_delay = 0.0
    time.sleep(1)
    assert authed_state(faults, run_id)["type"] == "RUNNING"  # a zombie, until detected
    wait_until("zombie marked Crashed by the automation",
               lambda: authed_state(faults, run_id)["type"] == "CRASHED", timeout=150)
    faults.restart_runner()
    result = faults.cli("reconcile", "--json")
    assert '"restarted"' in result.stdout and str(ob_id) in result.stdout
    new_run = faults.cli("status", str(ob_id), "--json").stdout
    new_run_id = new_run.split('"flow_run_id": "', 1)[1].split('"', 1)[0]
    assert new_run_id != run_id
    wait_until("the new run waits at close confirmation",
               lambda: authed_state(faults, new_run_id)["name"] == "Suspended")
    faults.cli("artifact", "add", str(ob_id), "deal_terms_confirmed",
               "scope_and_timeline_captured", "onboarding_owner_assigned")
    wait_until("intake", lambda: stage_of(faults, ob_id) == "intake_completion:active")
    wait_until("intake request", lambda: any("what we need from you" in s
                                             for s in mail_to(faults, "Sigkill Inc")))
    subjects = mail_to(faults, "Sigkill Inc")
    assert Counter(subjects).most_common(1)[0][1] == 1, subjects  # nothing sent twice
    # The welcome was claimed when the runner died: it is never re-sent blindly; after the
    # claim lease it is marked uncertain and the owner is asked to check.
    status = faults.cli("status", str(ob_id)).stdout
    assert "message welcome" in status
    assert stage_of(faults, ob_id) == "intake_completion:active"  # no stage skipped



def prefect_events(stack: Stack, name: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{stack.api_url}/events/filter", headers=AUTH_HEADER, timeout=10,
                          json={"filter": {"event": {"name": [name]}}, "limit": 50})
    assert response.status_code == 200, response.text
    return response.json()["events"]  # type: ignore[no-any-return]


@pytest.mark.flow
def test_a_refused_smtp_login_in_a_served_run_is_a_prefect_event_raised_once_and_cleared(
        faults: FaultStack) -> None:
    # The transport alarm reaches Prefect, where an automation can notify people without the
    # failing mail server: raised by the run that met the 535, cleared by the next pass.
    faults.smtp.password = "rotated-by-the-provider"  # handoff's password no longer works
    try:
        ob_id, run_id = onboard(faults, "Lockout LLC")
        wait_until("the alarm is a Prefect event", lambda: prefect_events(
            faults, "handoff.transport-alarm.raised"), timeout=180)
        wait_until("suspended", lambda: authed_state(faults, run_id)["name"] == "Suspended")
    finally:
        faults.smtp.password = "smtp-pw-never-logged"
    (raised,) = prefect_events(faults, "handoff.transport-alarm.raised")
    assert raised["resource"]["prefect.resource.id"] == "handoff.mail-transport"
    assert raised["payload"]["fault"] == "auth" and "535" in raised["payload"]["detail"]
    assert "smtp-pw-never-logged" not in str(raised)
    assert f"prefect.flow-run.{run_id}" in {r["prefect.resource.id"] for r in raised["related"]}
    assert "MAIL IS NOT GOING OUT" in faults.cli("status", str(ob_id)).stdout

    with temporary_settings(updates={PREFECT_API_URL: faults.api_url,
                                     PREFECT_API_AUTH_STRING: AUTH}):
        sweep = str(run_deployment("reminder-sweep/reminder-sweep", timeout=0).id)  # type: ignore[union-attr]
    wait_until("cleared by the next pass", lambda: prefect_events(
        faults, "handoff.transport-alarm.cleared"), timeout=180)
    (cleared,) = prefect_events(faults, "handoff.transport-alarm.cleared")
    assert f"prefect.flow-run.{sweep}" in {r["prefect.resource.id"] for r in cleared["related"]}
    assert len(prefect_events(faults, "handoff.transport-alarm.raised")) == 1
    assert any("welcome" in s.lower() for s in mail_to(faults, "Lockout LLC"))  # held, then sent
