"""Scheduled sweeps: reminder cadences, escalations, and keeping Prefect in step."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.comms.sweeps import sweep_now
from tasks.prefect.pacing import drain
from tasks.prefect.reconcile import reconcile_runs


@task(name="send due reminders", cache_policy=NO_CACHE)
def send_due_reminders(as_of: str | None) -> dict[str, object]:
    """Queue and send every client message due at as_of."""
    return sweep_now(as_of, messages=True, escalations=False)


@task(name="fire due escalations", cache_policy=NO_CACHE)
def fire_due_escalations(as_of: str | None) -> dict[str, object]:
    """Queue and send every escalation due at as_of; open the risks that fired."""
    return sweep_now(as_of, messages=False, escalations=True)


@task(name="reconcile runs", cache_policy=NO_CACHE)
def reconcile_onboarding_runs() -> dict[str, list[int]]:
    """Start, resume or restart client runs so Prefect matches the record."""
    report = reconcile_runs()
    return {"started": report.started, "resumed": report.resumed, "restarted": report.restarted}


@task(name="start queued runs", cache_policy=NO_CACHE)
def start_queued_client_runs() -> int:
    """Start queued client runs as earlier ones reach Suspended, until none wait."""
    return drain()


@flow(name="reminder-sweep")
def reminder_sweep(as_of: str | None = None) -> dict[str, object]:
    """Send the reminder cadences due now (or at as_of)."""
    return send_due_reminders(as_of)


@flow(name="escalation-sweep")
def escalation_sweep(as_of: str | None = None) -> dict[str, object]:
    """Fire the escalation thresholds and blocker escalation paths due now (or at as_of), and
    open the risks whose triggers fired."""
    return fire_due_escalations(as_of)


@flow(name="reconcile")
def reconcile() -> dict[str, list[int]]:
    """Keep every active onboarding's run alive and awake when its record says so."""
    return reconcile_onboarding_runs()


@flow(name="start-queued-runs")
def start_queued_runs() -> int:
    """Start the clients queued by a burst a few at a time, so the server never floods."""
    return start_queued_client_runs()
