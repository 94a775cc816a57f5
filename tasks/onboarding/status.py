"""Read models for `handoff status`: one client's card, and the whole portfolio in one query."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Communication, Onboarding, utcnow
from db.playbook import Playbook
from tasks.calendar.clock import calendar_for
from tasks.onboarding import records
from tasks.onboarding.exits import held_items
from tasks.risks.views import risk_rows

PENDING = ("queued", "sending", "failed", "uncertain")


def _message_state(clock: dict[str, Any], local: Callable[[dt.datetime | None], str]) -> str:
    """How a pending message reads on the card."""
    status = clock.get("status", "queued")
    goes_out = clock.get("goes_out")
    if status == "queued" and goes_out:
        return f"queued, goes out {local(dt.datetime.fromisoformat(goes_out))}"
    if status == "uncertain":
        return "UNCERTAIN: the sender stopped mid-send; check the inbox before re-sending"
    return status


def portfolio(session: Session, playbook: Playbook) -> list[dict[str, Any]]:
    """Every onboarding, active first, in one query."""
    rows = session.execute(
        select(Onboarding.id, Onboarding.client_name, Onboarding.stage, Onboarding.status,
               Onboarding.next_action, Onboarding.next_action_due, Onboarding.blocker_tag,
               Onboarding.owner_email, Onboarding.demo)
        .order_by(Onboarding.status, Onboarding.next_action_due, Onboarding.id)
    ).all()
    return [
        {"id": r.id, "client": r.client_name, "stage": r.stage, "status": r.status,
         "next_action": r.next_action,
         "next_action_due": r.next_action_due.isoformat() if r.next_action_due else None,
         "blocker": r.blocker_tag, "owner": r.owner_email, "demo": r.demo}
        for r in rows
    ]


def _portal_link(session: Session, playbook: Playbook, ob: Onboarding) -> dict[str, Any]:
    from tasks.portal.links import link_state

    return link_state(session, playbook, ob).as_dict()


def describe(session: Session, playbook: Playbook, onboarding_id: int,
             now: dt.datetime | None = None) -> dict[str, Any]:
    """One client's card: where it is, who owns it, what is missing, and its clocks."""
    now = now or utcnow()
    ob = records.get_onboarding(session, onboarding_id)
    stage = playbook.stage(ob.stage)
    missing = records.missing_items(session, playbook, ob) if ob.status == "active" else []
    problems = records.exit_problems(session, playbook, ob) if ob.status == "active" else []
    blockers = records.open_blockers(session, ob.id)
    calendar = calendar_for(playbook)
    tz = playbook.calendar.tz
    clocks: list[dict[str, Any]] = []
    if ob.status == "active" and ob.next_action_due is not None:
        remaining = int(calendar.business_time_between(now, ob.next_action_due).total_seconds()
                        // 60)
        by_client = {i.key for i in held_items(playbook, ob.stage, ob.stage_items)
                     if i.from_client}
        # A stage waits on the client for what only they can send, on the team for the rest.
        for side, keys in (("client", [k for k in missing if k in by_client]),
                           ("team", [k for k in missing if k not in by_client])):
            if keys or (side == "team" and not missing):
                clocks.append({
                    "clock": f"stage {stage.key}" + (f" ({len(keys)} items)" if keys else ""),
                    "waits_on": side, "items": keys,
                    "due": ob.next_action_due.isoformat(),
                    "business_minutes_left": remaining,
                    "breached": now > ob.next_action_due,
                })
    pending = session.scalars(
        select(Communication).where(Communication.onboarding_id == ob.id,
                                    Communication.status.in_(PENDING))
    ).all()
    for message in pending:
        clocks.append({"clock": f"message {message.template}", "waits_on": "team",
                       "due": message.due_at.isoformat() if message.due_at else None,
                       "status": message.status, "business_minutes_left": None,
                       "goes_out": (message.next_attempt_at.isoformat()
                                    if message.next_attempt_at else None),
                       "breached": bool(message.due_at and now > message.due_at)})
    card: dict[str, Any] = {
        "id": ob.id, "client": ob.client_name, "segment": ob.segment, "offer": ob.offer,
        "status": ob.status, "stage": ob.stage, "stage_name": stage.name,
        "owner": ob.owner_email, "backup": ob.backup_email, "contacts": ob.contacts,
        "next_action": ob.next_action,
        "next_action_due": ob.next_action_due.isoformat() if ob.next_action_due else None,
        "kickoff_at": ob.kickoff_at.isoformat() if ob.kickoff_at else None,
        "kickoff_by": ob.kickoff_by.isoformat() if ob.kickoff_by else None,
        "first_milestone": ob.first_milestone.isoformat() if ob.first_milestone else None,
        "missing_artifacts": missing, "exit_problems": problems,
        "open_blockers": [{"id": b.id, "type": b.type, "critical": b.critical,
                           "opened_at": b.opened_at.isoformat()} for b in blockers],
        "clocks": clocks, "flow_run_id": ob.flow_run_id, "demo": ob.demo,
        "client_tz": ob.client_tz,
        "portal": _portal_link(session, playbook, ob),
        "open_risks": [{"id": r["id"], "category": r["category"], "label": r["label"],
                        "owner": r["owner"], "next_review_at": r["next_review_at"].isoformat()}
                       for r in risk_rows(session, playbook, open_only=True,
                                          onboarding_id=ob.id)],
    }
    def local(at: dt.datetime | None) -> str:
        return at.astimezone(tz).strftime("%a %d %b %H:%M %Z") if at else "-"

    lines = [
        f"#{ob.id} {ob.client_name} ({ob.segment}, {ob.offer}) — {ob.status}"
        + (" — DEMO client: its mail is recorded as suppressed, never sent" if ob.demo else ""),
        f"stage:   {stage.name} since {local(ob.stage_entered_at)}",
        f"owner:   {ob.owner_email} (backup {ob.backup_email})",
        *([f"client:  in {ob.client_tz}: their mail waits for their working hours too"]
          if ob.client_tz else []),
        f"next:    {ob.next_action or '-'} — due {local(ob.next_action_due)}",
        f"kickoff: {local(ob.kickoff_at)} (committed by {card['kickoff_by'] or '-'})",
    ]
    portal = card["portal"]
    lines.append(f"portal:  {portal['url']}" if portal["usable"] else
                 "portal:  no working link ('handoff portal link ID --rotate' issues one)")
    if missing:
        lines.append("missing: " + ", ".join(missing))
    for problem in problems:
        if not problem.startswith("missing artifacts"):
            lines.append(f"blocked: {problem}")
    for b in blockers:
        lines.append(f"blocker: #{b.id} {b.type}{' (critical)' if b.critical else ''} "
                     f"since {local(b.opened_at)}")
    for risk in card["open_risks"]:
        lines.append(f"risk:    #{risk['id']} {risk['label']}, owner {risk['owner']}, "
                     f"review due {local(dt.datetime.fromisoformat(risk['next_review_at']))}")
    for clock in clocks:
        left: int | None = clock["business_minutes_left"]
        state = "BREACHED" if clock["breached"] else (
            f"{left // 60}h{left % 60:02d}m business time left" if left is not None
            else _message_state(clock, local))
        lines.append(f"clock:   {clock['clock']} waits on {clock['waits_on']}: {state}")
    card["text"] = "\n".join(lines)
    return card
