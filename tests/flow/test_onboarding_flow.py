"""End to end on real components: CLI -> Prefect server -> served runner -> SMTP -> database."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import psutil
import pytest
import yaml
from sqlalchemy import create_engine, text

from tests.flow.conftest import Stack

T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 90) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def db_value(stack: Stack, sql: str, **params: Any) -> Any:
    engine = create_engine(stack.db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


def run_state(stack: Stack, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.api_url}/flow_runs/{run_id}", timeout=10)
    response.raise_for_status()
    return response.json()["state"]  # type: ignore[no-any-return]


def suspended(stack: Stack, run_id: str) -> bool:
    state = run_state(stack, run_id)
    return state["type"] == "PAUSED" and state["name"] == "Suspended"


def mail_to(stack: Stack, ob_client: str) -> list[str]:
    """Subjects of every message that mentions this client, in arrival order."""
    return [str(m.message["Subject"]) for m in stack.smtp.messages
            if ob_client in str(m.message["Subject"])
            or ob_client in m.message.get_body(("plain",)).get_content()]  # type: ignore[union-attr]


def onboard(stack: Stack, client: str, *extra: str) -> tuple[int, str]:
    result = stack.cli("onboard", "--client", client, "--segment", "smb", "--offer", "Growth",
                       "--owner", "va@northwind.example", "--backup", "va2@northwind.example",
                       "--contact", f"pat@{client.lower().replace(' ', '')}.example",
                       "--kickoff-by", "2099-01-01", "--first-milestone", "2099-02-01",
                       "--json", *extra)
    data = json.loads(result.stdout)
    assert "/runs/flow-run/" in data["flow"], data
    return int(data["id"]), data["flow"].rsplit("/", 1)[1]


def stage_of(stack: Stack, ob_id: int) -> str:
    return str(db_value(stack, "SELECT stage || ':' || status FROM onboardings WHERE id = :i",
                        i=ob_id))


def runner_children(stack: Stack) -> list[psutil.Process]:
    """Flow-run processes the runner holds right now (not multiprocessing's resource tracker,
    one process whatever the number of runs, which it starts with the first run it spawns)."""
    held = []
    for child in psutil.Process(stack.runner.pid).children(recursive=True):
        try:
            if "multiprocessing.resource_tracker" not in " ".join(child.cmdline()):
                held.append(child)
        except psutil.NoSuchProcess:
            pass
    return held


def record(stack: Stack, *args: str) -> str:
    """A VA's record command. When it could not wake the run (the Prefect server did not answer
    in time: this machine is shared), do what the reconcile flow does every 5 minutes, now."""
    said = stack.cli(*args).stdout
    if "reconcile flow will" in said:
        stack.cli("reconcile")
    return said


def advance(stack: Stack, ob_id: int, run_id: str, keys: list[str], expect: str) -> None:
    wait_until("run suspended before recording", lambda: suspended(stack, run_id))
    record(stack, "artifact", "add", str(ob_id), *keys, "--by", "va")
    wait_until(f"stage {expect}", lambda: stage_of(stack, ob_id) == expect)


@pytest.mark.flow
def test_client_walks_all_five_stages(stack: Stack) -> None:
    client = "Quillfeather Dental"  # no other flow test in the session mails this name
    ob_id, run_id = onboard(stack, client)
    wait_until("welcome email", lambda: any("Welcome to" in s for s in mail_to(stack, client)))
    wait_until("run suspended", lambda: suspended(stack, run_id))
    state = run_state(stack, run_id)
    assert state["state_details"]["pause_key"] == "close-confirmation-0"
    assert wait_until("no process held while suspended",
                      lambda: runner_children(stack) == [] or None, timeout=20) is not None

    run = httpx.get(f"{stack.api_url}/flow_runs/{run_id}", timeout=10).json()
    assert run["name"] == f"{client} #{ob_id}"
    assert {"segment:smb", "offer:Growth", f"onboarding:{ob_id}"} <= set(run["tags"])

    advance(stack, ob_id, run_id, ["deal_terms_confirmed", "scope_and_timeline_captured",
                                   "onboarding_owner_assigned"], "intake_completion:active")
    wait_until("intake request", lambda: any("what we need from you" in s
                                             for s in mail_to(stack, client)))
    stack.cli("kickoff", "schedule", str(ob_id), "--when", "2098-12-20T15:00")
    advance(stack, ob_id, run_id, ["docs_and_access_requested", "intake_questionnaire_completed",
                                   "risk_flags_captured", "scope_summary_documented",
                                   "required_assets_received", "system_access_verified",
                                   "kickoff_agenda_prepared", "owner_map_confirmed"],
            "kickoff_alignment:active")
    advance(stack, ob_id, run_id, ["kickoff_call_held", "responsibilities_clarified",
                                   "communication_cadence_set"], "setup_execution:active")
    wait_until("suspended in setup", lambda: suspended(stack, run_id))
    record(stack, "artifact", "add", str(ob_id), "tools_assets_workflows_configured",
           "checklist_tasks_completed")
    wait_until("suspended waiting for QA", lambda: suspended(stack, run_id)
               and db_value(stack, "SELECT count(*) FROM events WHERE kind = "
                                   "'form:setup_execution' AND onboarding_id = :i", i=ob_id) >= 1)
    assert stage_of(stack, ob_id) == "setup_execution:active"  # no QA yet: the gate holds
    waited = stack.cli("qa", "record", str(ob_id), "--pass", "--wait").stdout
    assert "client now in " in waited, waited  # --wait says where the run left the client
    wait_until("packet stage", lambda: stage_of(stack, ob_id) == "ready_to_deliver:active")
    wait_until("packet email", lambda: any(s.startswith("Handoff packet:")
                                           for s in mail_to(stack, client)))
    advance(stack, ob_id, run_id, ["first_milestone_confirmed", "success_criteria_documented",
                                   "setup_tasks_complete", "quality_checks_passed",
                                   "first_milestone_date_confirmed", "client_recap_sent",
                                   "delivery_packet_signed_off"], "ready_to_deliver:ready")
    wait_until("run completed", lambda: run_state(stack, run_id)["type"] == "COMPLETED")

    subjects = mail_to(stack, client)
    assert len(subjects) == len(set(subjects)), Counter(subjects)  # nothing sent twice
    kinds = [s.split(":")[0] for s in subjects]
    assert kinds == [
        f"Welcome to Northwind Studio, {client}",
        f"{client}",  # intake request
        "Kickoff confirmed",
        f"Kickoff recap and what happens next for {client}",
        "Handoff packet",
        f"{client} is ready to deliver",
    ], subjects
    packet = next(m for m in stack.smtp.messages
                  if str(m.message["Subject"]).startswith(f"Handoff packet: {client}"))
    assert list(packet.rcpt_tos) == ["delivery@northwind.example"]
    body = packet.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    for title in ("Client profile and objectives", "Approved scope and exclusions",
                  "Timeline and milestone map", "Risks and unresolved dependencies",
                  "Communication preferences", "Escalation contacts"):
        assert title in body
    invite = next(m for m in stack.smtp.messages
                  if str(m.message["Subject"]).startswith("Kickoff confirmed")
                  and list(m.rcpt_tos) == [f"pat@{client.lower().replace(' ', '')}.example"])
    ics = [p for p in invite.message.walk() if p.get_content_type() == "text/calendar"]
    assert ics and b"DTSTART:20981220T150000Z" in ics[0].get_payload(decode=True)
    artifact = httpx.get(f"{stack.api_url}/artifacts/handoff-packet-{ob_id}/latest", timeout=10)
    assert artifact.status_code == 200
    assert "Approved scope and exclusions" in artifact.json()["data"]


@pytest.mark.flow
def test_bad_resume_input_keeps_the_run_suspended(stack: Stack) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    client = "Globex"
    ob_id, run_id = onboard(stack, client)
    wait_until("run suspended", lambda: suspended(stack, run_id))
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        with pytest.raises(RuntimeError, match="Validation failed"):
            resume_flow_run(run_id, run_input={"deal_terms_confirmed": "maybe"})
        assert suspended(stack, run_id)
        # Valid for the schema, but not for the guardrails: the note is control characters.
        resume_flow_run(run_id, run_input={"deal_terms_confirmed": True, "note": "bad\x00note"})
        wait_until("suspended again on a new key",
                   lambda: suspended(stack, run_id)
                   and run_state(stack, run_id)["state_details"]["pause_key"]
                   == "close-confirmation-1")
        def rejection_logged() -> bool:
            with get_client(sync_client=True) as prefect:
                logs = prefect.read_logs(log_filter=LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)])))
            return any("rejected, nothing recorded" in log.message
                       and "control characters" in log.message for log in logs)

        wait_until("the rejection in the run's log", rejection_logged, timeout=30)
    assert db_value(stack, "SELECT count(*) FROM artifacts WHERE onboarding_id = :i "
                           "AND key = 'deal_terms_confirmed'", i=ob_id) == 0
    reason = db_value(stack, "SELECT reason FROM events WHERE kind = "
                             "'form_rejected:close_confirmation' AND onboarding_id = :i", i=ob_id)
    assert "control characters" in reason

    # Resume twice in a row through both doors: still one welcome, and the form's facts recorded.
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        resume_flow_run(run_id, run_input={"deal_terms_confirmed": True,
                                           "scope_and_timeline_captured": True})
    stack.cli("artifact", "add", str(ob_id), "onboarding_owner_assigned")
    wait_until("intake", lambda: stage_of(stack, ob_id) == "intake_completion:active")
    wait_until("suspended in intake", lambda: suspended(stack, run_id))
    subjects = mail_to(stack, client)
    assert sum("Welcome to" in s for s in subjects) == 1
    assert sum("what we need from you" in s for s in subjects) == 1


def edit_playbook(stack: Stack, version: str, **added: dict[str, str]) -> None:
    """Add a required item to these stages of the playbook file the running stack reads."""
    path = Path(stack.env["HANDOFF_PLAYBOOK_PATH"])
    raw = yaml.safe_load(path.read_text())
    raw["version"] = version
    for stage in raw["stages"]:
        if stage["key"] in added:
            stage["artifacts"].append(added[stage["key"]])
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def held_in(stack: Stack, ob_id: int, run_id: str, stage: str, forms: int) -> list[str]:
    """Wait until the run has read its `forms`-th wake-up in this stage and suspended again;
    the client's exit problems then."""
    wait_until(f"suspended again in {stage}", lambda: suspended(stack, run_id) and db_value(
        stack, "SELECT count(*) FROM events WHERE kind = :k AND onboarding_id = :i",
        k=f"form:{stage}", i=ob_id) >= forms)
    card = json.loads(stack.cli("status", str(ob_id), "--json").stdout)
    assert card["stage"] == stage, card
    return list(card["exit_problems"])


@pytest.mark.flow
def test_playbook_edited_under_a_suspended_client(stack: Stack) -> None:
    """The file changes while the client's run is suspended in intake: the new intake item is
    not required of it (it entered before), the new kickoff item is (it enters kickoff after);
    a third item applied with `playbook apply --apply-now` holds it in the stage it is in."""
    path = Path(stack.env["HANDOFF_PLAYBOOK_PATH"])
    shipped = path.read_text()
    ob_id, run_id = onboard(stack, "Inkwell Optics", "--terms", "Annual, net 30",
                            "--scope", "Two sites, go-live in March")
    wait_until("suspended in intake", lambda: stage_of(stack, ob_id) == "intake_completion:active"
               and suspended(stack, run_id))
    try:
        edit_playbook(stack, "2026.12.1",
                      intake_completion={"key": "dpa_signed", "label": "DPA signed", "lane": "A"},
                      kickoff_alignment={"key": "raci_shared", "label": "RACI shared",
                                         "lane": "C"})
        stack.cli("artifact", "add", str(ob_id), "docs_and_access_requested",
                  "intake_questionnaire_completed", "risk_flags_captured",
                  "scope_summary_documented", "required_assets_received",
                  "system_access_verified", "kickoff_agenda_prepared", "owner_map_confirmed")
        wait_until("kickoff without dpa_signed",
                   lambda: stage_of(stack, ob_id) == "kickoff_alignment:active")
        assert held_in(stack, ob_id, run_id, "kickoff_alignment", 0) == [
            "missing artifacts kickoff_call_held, responsibilities_clarified, "
            "communication_cadence_set, raci_shared"]
        stack.cli("artifact", "add", str(ob_id), "kickoff_call_held",
                  "responsibilities_clarified", "communication_cadence_set")
        assert held_in(stack, ob_id, run_id, "kickoff_alignment", 1) == [
            "missing artifacts raci_shared"]

        edit_playbook(stack, "2026.12.2",
                      kickoff_alignment={"key": "sow_signed", "label": "SOW signed", "lane": "A"})
        applied = json.loads(stack.cli("playbook", "apply", "--apply-now", "--json").stdout)
        assert {"id": ob_id, "added": ["sow_signed"]} in applied["changed"]
        stack.cli("artifact", "add", str(ob_id), "raci_shared")
        assert held_in(stack, ob_id, run_id, "kickoff_alignment", 2) == [
            "missing artifacts sow_signed"]
        stack.cli("artifact", "add", str(ob_id), "sow_signed")
        wait_until("setup", lambda: stage_of(stack, ob_id) == "setup_execution:active")
        assert db_value(stack, "SELECT playbook_version || ' ' || stage_playbook_version "
                               "FROM onboardings WHERE id = :i", i=ob_id) == "2026.11.1 2026.12.2"
    finally:
        path.write_text(shipped)
