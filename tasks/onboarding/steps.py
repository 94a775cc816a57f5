"""The onboarding flow's steps: small Prefect tasks that take ids and read the database.

Tasks never cache: a resumed run re-executes the flow body from the top and must see the record
as it is now. Side effects are idempotent through the database (outbox keys, unique artifacts).
"""

from __future__ import annotations

import datetime as dt
import re
from functools import cache
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from pydantic import BaseModel, Field, create_model
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import DELIVERED, Communication, Event, utcnow
from db.playbook import Gate, Playbook, get_playbook
from db.playbook.model import PACKET
from db.session import session_factory, transaction
from db.settings import get_settings
from db.validation import HandoffError, parse_instant
from tasks.comms import keys
from tasks.comms.cadences import entry_and_exit_messages
from tasks.comms.snapshot import Client
from tasks.comms.sweeps import queue_due
from tasks.mail.delivery import deliver
from tasks.mail.outbox import Draft, business_context, enqueue
from tasks.onboarding import records
from tasks.onboarding.packet import assemble_packet

SYSTEM = "handoff-flow"


class StageCheck(BaseModel):
    """Where one client stands against one stage."""

    stage: str
    passed: bool  # the client is beyond this stage
    met: bool  # the client is in this stage and may leave it
    problems: list[str]
    wait: int  # how many forms this stage has received; the next suspension's key number
    last_error: str | None
    description: str
    packet: bool = False  # the stage sends the handoff packet on entry (playbook on_enter)


def check_stage_exit(onboarding_id: int, stage: str) -> StageCheck:
    """Read the record: is the client past this stage, and if in it, may it leave?

    A plain read, not a task: a resumed run replays the flow from the top and checks every
    earlier stage again, and as tasks those checks were a task run each (created, Running,
    Completed: rows and events the server writes) for nothing a person reads.
    """
    playbook = get_playbook()
    order = [s.key for s in playbook.stages]
    with transaction() as session:
        ob = records.get_onboarding(session, onboarding_id)
        passed = ob.status == "ready" or order.index(ob.stage) > order.index(stage)
        problems = [] if passed else records.exit_problems(session, playbook, ob)
        if ob.status == "active" and ob.stage != stage and not passed:
            problems = [f"client is in {ob.stage}, before {stage}"]
        waits = session.scalar(select(func.count()).select_from(Event).where(
            Event.onboarding_id == onboarding_id, Event.kind == f"form:{stage}")) or 0
        last_error = session.scalars(select(Event.reason).where(
            Event.onboarding_id == onboarding_id, Event.kind == f"form_rejected:{stage}")
            .order_by(Event.id.desc()).limit(1)).first()
        client = ob.client_name
    description = _describe(playbook.stage(stage).name, client, problems, last_error)
    return StageCheck(stage=stage, passed=passed, met=not passed and not problems,
                      problems=problems, wait=int(waits), last_error=last_error,
                      description=description, packet=PACKET in playbook.stage(stage).on_enter)


def _describe(stage_name: str, client: str, problems: list[str], error: str | None) -> str:
    from tasks.mail.render import render_page

    return render_page("stage_form.md", {"stage": stage_name, "client": client,
                                         "problems": problems, "error": error})


@task(name="send due messages", task_run_name="messages for #{onboarding_id}",
      cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def send_due_messages(onboarding_id: int) -> int:
    """Queue what is due for this client now (welcome, intake, kickoff, recap...) and send it."""
    playbook, factory, now = get_playbook(), session_factory(), utcnow()
    with factory.begin() as session:
        queue_due(session, playbook, now, escalations=False, onboarding_ids=[onboarding_id])
    return deliver(factory, playbook, get_settings(), now=now, onboarding_id=onboarding_id).sent


@task(name="advance stage", task_run_name="leave {stage}", cache_policy=NO_CACHE)
def advance_stage(onboarding_id: int, stage: str) -> str:
    """Record the transition through the guardrails; returns the new stage or 'ready'."""
    playbook = get_playbook()
    with transaction() as session:
        ob = records.get_onboarding(session, onboarding_id, for_update=True)
        if ob.stage != stage or ob.status != "active":
            return ob.stage if ob.status == "active" else ob.status  # a replay already moved it
        ob = records.advance(session, playbook, onboarding_id, actor=SYSTEM, expected_stage=stage)
        result = ob.stage if ob.status == "active" else ob.status
    get_run_logger().info("onboarding %s: %s -> %s", onboarding_id, stage, result)
    return result


@cache
def stage_form(stage: str) -> type[RunInput]:
    """The Prefect UI form for a stage: its missing items as ticks, plus what the stage needs."""
    playbook = get_playbook()
    fields: dict[str, Any] = {}
    for item in playbook.required_items(stage):
        if not item.system:
            fields[item.key] = (bool, Field(False, title=item.label,
                                            description=f"Tick when received (lane {item.lane})"))
    if stage in ("intake_completion", "kickoff_alignment"):
        fields["kickoff_at"] = (str, Field("", title="Kickoff date and time", max_length=40,
                                           description="ISO 8601, e.g. 2026-12-01T10:00 "
                                           f"({playbook.calendar.timezone})"))
    if Gate.QA_PASSED in playbook.stage(stage).gates:
        fields["qa_result"] = (Literal["", "pass", "fail"],
                               Field("", title="QA result", description="pass or fail"))
        fields["qa_reason"] = (str, Field("", title="QA rework reason", max_length=2000,
                                          description="Required when QA fails"))
    fields["note"] = (str, Field("", title="Note", max_length=2000))
    fields["recorded_by"] = (str, Field("va", title="Your name", max_length=200))
    name = "".join(part.title() for part in re.split(r"_", stage)) + "Form"
    return create_model(name, __base__=RunInput, **fields)


@task(name="record stage form", task_run_name="record form for {stage}", cache_policy=NO_CACHE)
def record_stage_form(onboarding_id: int, stage: str, wait: int, form: dict[str, Any]) -> str:
    """Record what the form gave, all or nothing; bad input is logged and the stage waits again."""
    playbook = get_playbook()
    factory = session_factory()
    now = utcnow()
    by = str(form.get("recorded_by") or "va")
    error: str | None = None
    try:
        with factory.begin() as session:
            _apply_form(session, playbook, onboarding_id, stage, form, by=by, now=now)
            records.log_event(session, f"form:{stage}", actor=by, onboarding_id=onboarding_id,
                              at=now, wait=wait, given=sorted(k for k, v in form.items() if v))
    except HandoffError as exc:
        error = str(exc)
        with factory.begin() as session:
            records.log_event(session, f"form:{stage}", actor=by, onboarding_id=onboarding_id,
                              at=now, wait=wait, rejected=True)
            records.log_event(session, f"form_rejected:{stage}", actor=by,
                              onboarding_id=onboarding_id, at=now, reason=error)
        get_run_logger().error("stage form for %s rejected, nothing recorded: %s", stage, error)
    return error or "recorded"


def _apply_form(session: Session, playbook: Playbook, onboarding_id: int, stage: str,
                form: dict[str, Any], *, by: str, now: dt.datetime) -> None:
    note = form.get("note") or None
    for item in playbook.required_items(stage):
        if form.get(item.key) is True:
            records.record_artifact(session, playbook, onboarding_id, item.key, by=by, at=now,
                                    note=note)
    kickoff = (form.get("kickoff_at") or "").strip()
    if kickoff:
        start = parse_instant(kickoff, playbook.calendar.tz, "kickoff date", default_now=False)
        records.schedule_kickoff(session, playbook, onboarding_id, kickoff_at=start, by=by,
                                 at=now)
    qa = form.get("qa_result") or ""
    if qa:
        records.record_qa(session, onboarding_id, passed=qa == "pass",
                          reason=form.get("qa_reason") or None, by=by, at=now)


@task(name="deliver handoff packet", task_run_name="packet for #{onboarding_id}",
      cache_policy=NO_CACHE)
def deliver_handoff_packet(onboarding_id: int) -> int:
    """Assemble the packet once, publish it on the run, mail the delivery team, mark delivered."""
    playbook, factory, now = get_playbook(), session_factory(), utcnow()
    key = keys.stage_message(PACKET, onboarding_id)
    with factory.begin() as session:
        queued = session.scalars(select(Communication).where(
            Communication.idempotency_key == key)).first()
        if queued is None:
            packet, ctx = assemble_packet(session, playbook, onboarding_id, now)
            enqueue(session, playbook, Draft(
                onboarding_id=onboarding_id, template=PACKET,
                recipients=[str(playbook.business.delivery_team.email)], key=key,
                context={"business": business_context(playbook), **ctx}), now=now)
            markdown, revision = packet.markdown, packet.revision
        else:
            markdown, revision = "", 0
    if markdown:
        create_markdown_artifact(markdown=markdown, key=f"handoff-packet-{onboarding_id}",
                                 description=f"Handoff packet revision {revision}")
    deliver(factory, playbook, get_settings(), now=now, onboarding_id=onboarding_id)
    with factory.begin() as session:
        sent = session.scalars(select(Communication.status).where(
            Communication.idempotency_key == key)).first() in DELIVERED
        if sent:
            records.record_artifact(session, playbook, onboarding_id, "handoff_packet_delivered",
                                    by=SYSTEM, at=now, note="packet emailed to the delivery team")
    return revision


@task(name="confirm ready to deliver", task_run_name="ready: #{onboarding_id}",
      cache_policy=NO_CACHE)
def confirm_ready(onboarding_id: int) -> str:
    """Send the last stage's on_exit messages (the client's ready mail), once, and finish."""
    playbook, factory, now = get_playbook(), session_factory(), utcnow()
    with factory.begin() as session:
        ob = records.get_onboarding(session, onboarding_id)
        if ob.status != "ready":
            raise HandoffError(f"onboarding {onboarding_id} is not ready ({ob.stage})")
        client = Client(row=ob, artifacts=records.recorded_times(session, onboarding_id))
        for draft in entry_and_exit_messages(playbook, client, ob.owner_email, now):
            enqueue(session, playbook, draft, now=now)
    deliver(factory, playbook, get_settings(), now=now, onboarding_id=onboarding_id)
    return "ready"
