"""One client's onboarding: the five stages, in order, suspended while a stage waits."""

from __future__ import annotations

from prefect import flow, suspend_flow_run
from prefect.runtime import flow_run

from tasks.onboarding.steps import (
    advance_stage,
    check_stage_exit,
    confirm_ready,
    deliver_handoff_packet,
    record_stage_form,
    send_due_messages,
    stage_form,
)


def _run_name() -> str:
    from tasks.prefect.names import onboarding_run_name

    return onboarding_run_name(int(flow_run.parameters["onboarding_id"]))


@flow(name="client-onboarding", flow_run_name=_run_name, persist_result=True)
def client_onboarding(onboarding_id: int) -> str:
    """Walk the client from deal closed to ready to deliver; the database says where it is."""
    walk_stage(onboarding_id, "close_confirmation")
    walk_stage(onboarding_id, "intake_completion")
    walk_stage(onboarding_id, "kickoff_alignment")
    walk_stage(onboarding_id, "setup_execution")
    walk_stage(onboarding_id, "ready_to_deliver")
    return confirm_ready(onboarding_id)


def walk_stage(onboarding_id: int, stage: str) -> None:
    """Send what the stage says, then leave it when its exit holds, or suspend until told."""
    while True:
        check = check_stage_exit(onboarding_id, stage)
        if check.passed:
            return
        send_due_messages(onboarding_id)
        if check.packet:
            deliver_handoff_packet(onboarding_id)
            check = check_stage_exit(onboarding_id, stage)
        if check.met:
            advance_stage(onboarding_id, stage)
            continue
        form = suspend_flow_run(
            wait_for_input=stage_form(stage).with_initial_data(description=check.description),
            key=f"{stage.replace('_', '-')}-{check.wait}",
            timeout=None,
        )
        record_stage_form(onboarding_id, stage, check.wait, form.model_dump())
