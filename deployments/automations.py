"""Prefect automations the deployment set-up creates: zombie runs are marked Crashed.

A worker or runner that dies mid-stage leaves its run Running forever. Runs emit heartbeats
(PREFECT_FLOWS_HEARTBEAT_FREQUENCY); when a running flow run stops sending them, this automation
marks it Crashed, and the reconcile flow restarts it from the record.
"""

from __future__ import annotations

from datetime import timedelta

AUTOMATION_NAME = "handoff: crash zombie flow runs"

# Every event that legitimately ends a run's heartbeats. Suspended and Paused are included:
# a waiting client's run has no process, so it sends no heartbeat and is not a zombie.
QUIET_ENDINGS = ("Completed", "Failed", "Cancelled", "Crashed", "Suspended", "Paused")


def ensure_zombie_automation(heartbeat_seconds: int) -> str:
    """Create the automation once (idempotent by name); returns what was done."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        Automation.read(name=AUTOMATION_NAME)  # type: ignore[unused-coroutine]
        return "exists"
    except ValueError:
        pass
    Automation(
        name=AUTOMATION_NAME,
        description="Marks a running flow run Crashed when its heartbeats stop.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat",
                    *(f"prefect.flow-run.{state}" for state in QUIET_ENDINGS)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=heartbeat_seconds * 2 + 15),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, name="Crashed", force=False,
                                    message="No heartbeat: the worker or runner died.")],
    ).create()
    return "created"
