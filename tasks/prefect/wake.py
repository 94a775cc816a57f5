"""Waking a client's run when a fact is recorded: Prefect's REST API over the standard library.

A VA records dozens of facts an hour, so this is the cheap door: one read of the run and, when
it waits on its stage form, one resume — no Prefect import (~2 s of CPU), no HTTP client
library, no health probe first. It never waits for the run unless asked (`--wait`): the fact is
committed before anything here runs, a resumed run re-checks the record, and a run that was busy
and suspends without seeing the fact is woken by the reconcile flow.

A busy server says so: Prefect answers 503 when its database is locked (SQLite under load), and
such a call is tried again a few times within seconds (`tasks.prefect.runs.when_busy_again`), so
the run is woken now rather than by the next reconcile pass. A call that times out is not tried
again.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from uuid import UUID

from sqlalchemy.exc import OperationalError

from db.session import transaction
from db.settings import get_settings
from tasks.onboarding import records
from tasks.prefect.runs import (
    WAITING,
    api_headers,
    configure_prefect_client,
    no_answer_note,
    ui_url,
    unreachable_note,
    when_busy_again,
)


class _Gone(Exception):
    """The flow run does not exist (any more)."""


def nudge_run(onboarding_id: int, wait_seconds: float = 0.0) -> str:
    """Resume the client's suspended run so it re-checks the database; say what happened.

    With `wait_seconds`, also wait (that long at most) for the run to act on the record and wait
    again, and say where the client stands then. Never raises for Prefect or a busy database:
    the fact is recorded either way, and the reconcile flow catches the run up.
    """
    try:
        with transaction() as session:
            ob = records.get_onboarding(session, onboarding_id)
            flow_run_id, status = ob.flow_run_id, ob.status
    except OperationalError:
        return "the database is busy; the reconcile flow will wake the run"
    if status != "active":
        return f"onboarding is {status}; no run to wake"
    if flow_run_id is None:
        return "no flow run yet; the reconcile flow will start one"
    try:
        said = wake(UUID(flow_run_id), wait_seconds)
    except _Gone:
        return "the flow run no longer exists; the reconcile flow will start a new one"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return unreachable_note()
        return no_answer_note(exc)
    except (OSError, ValueError) as exc:  # a timeout, a reset connection, not JSON
        return no_answer_note(exc)
    return f"{said}; client now in {_stage_now(onboarding_id)}" if wait_seconds else said


def wake(flow_run_id: UUID, wait_seconds: float = 0.0) -> str:
    """Resume the run if it waits on its stage form; with `wait_seconds`, then wait for it to
    wait again (or end)."""
    deadline = time.monotonic() + wait_seconds
    resumed_from: str | None = None
    while True:
        state = _call("GET", f"/flow_runs/{flow_run_id}").get("state") or {}
        kind, name = state.get("type"), state.get("name") or "pending"
        if kind == "PAUSED" and name == WAITING and state.get("id") != resumed_from:
            if resumed_from is not None:
                return "the run re-checked the record and waits again"
            answer = _call("POST", f"/flow_runs/{flow_run_id}/resume", {"run_input": {}})
            if answer.get("status") == "ABORT":
                return "the run was already resuming; it will re-check the record"
            if answer.get("status") != "ACCEPT":
                reason = (answer.get("details") or {}).get("reason") or "no reason given"
                return f"the run refused the resume: {reason}"
            if not wait_seconds:
                return f"resumed {ui_url(flow_run_id)}"
            resumed_from = state.get("id")
        elif kind in ("SCHEDULED", "PENDING") and resumed_from is None:
            return f"the run is {name}; it reads the record when it starts"
        elif kind == "COMPLETED":
            return "the run has completed"
        elif kind in ("FAILED", "CRASHED", "CANCELLED"):
            return f"the run is {name}; the reconcile flow will restart it"
        if time.monotonic() >= deadline:
            return (f"the run is {name}; it re-checks the record before it waits again"
                    if resumed_from is None else f"resumed {ui_url(flow_run_id)}; still {name}")
        time.sleep(0.5)


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One Prefect API call, each try bounded by HANDOFF_PREFECT_TIMEOUT; its JSON answer.

    Tried again after a busy answer: a resume the server refused with 503 changed nothing, and
    one it did apply is answered ABORT ("already resuming") the second time.
    """
    request = urllib.request.Request(
        configure_prefect_client().rstrip("/") + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **api_headers()})

    def once() -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request,
                                        timeout=get_settings().prefect_timeout) as response:
                answer: dict[str, Any] = json.load(response)
            return answer
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise _Gone from None
            raise

    return when_busy_again(once)


def _stage_now(onboarding_id: int) -> str:
    from db.playbook import get_playbook

    with transaction() as session:
        ob = records.get_onboarding(session, onboarding_id)
        return (get_playbook().stage(ob.stage).name if ob.status == "active"
                else f"status {ob.status}")
