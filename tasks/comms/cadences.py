"""What should be said, to whom, and when: the reminder cadences and the escalation rules.

Everything is computed from one snapshot of the active portfolio, loaded in a fixed number of
set-based queries whatever the number of clients, then decided by pure functions. The flow asks
the same functions about one client, so a sweep and a flow can never disagree about a message.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from db.models import (
    Artifact,
    Blocker,
    ClientResponse,
    Communication,
    Onboarding,
    OwnerAway,
)
from db.playbook import Playbook, TimeUnit
from db.session import collector_paused
from tasks.calendar.clock import business_hours_per_day, due_after, kickoff_window_end
from tasks.comms import keys
from tasks.mail.outbox import Draft, away_at, business_context
from tasks.mail.render import calendar_invite

KICKOFF_MINUTES = 45


@dataclass
class SentMessage:
    """One outbox row, as much as the rules need."""

    template: str
    key: str
    status: str
    sent_at: dt.datetime | None
    created_at: dt.datetime
    cycle: int


@dataclass
class Client:
    """One active onboarding and everything the rules read about it."""

    row: Onboarding
    artifacts: dict[str, dt.datetime] = field(default_factory=dict)
    messages: list[SentMessage] = field(default_factory=list)
    blockers: list[Blocker] = field(default_factory=list)
    last_response: dt.datetime | None = None

    def sent(self, template: str) -> list[SentMessage]:
        return [m for m in self.messages if m.template == template]


@dataclass
class Snapshot:
    """The active portfolio at one instant, plus who is away."""

    clients: list[Client]
    away: dict[str, dt.date]
    keys: set[str]


def load_snapshot(session: Session, as_of: dt.datetime,
                  onboarding_ids: list[int] | None = None, *,
                  tz: dt.tzinfo) -> Snapshot:
    """Load active onboardings and their facts: six queries, whatever the portfolio size.

    `tz` is the playbook's timezone: an owner away "until" a date is away to its local midnight.
    """
    with collector_paused():  # ~100k rows at 20k active clients; see collector_paused
        return _load_snapshot(session, as_of, onboarding_ids, tz)


def _load_snapshot(session: Session, as_of: dt.datetime, onboarding_ids: list[int] | None,
                   tz: dt.tzinfo) -> Snapshot:
    active = Onboarding.status == "active"
    if onboarding_ids is not None:
        active = and_(active, Onboarding.id.in_(onboarding_ids))
    rows = list(session.scalars(select(Onboarding).where(active).order_by(Onboarding.id)))
    clients = {r.id: Client(row=r) for r in rows}
    for ob_id, key, at in session.execute(
            select(Artifact.onboarding_id, Artifact.key, Artifact.recorded_at)
            .join(Onboarding, Onboarding.id == Artifact.onboarding_id).where(active)):
        clients[ob_id].artifacts[key] = at
    keys: set[str] = set()
    for m in session.execute(
            select(Communication.onboarding_id, Communication.template,
                   Communication.idempotency_key, Communication.status, Communication.sent_at,
                   Communication.created_at, Communication.cycle)
            .join(Onboarding, Onboarding.id == Communication.onboarding_id).where(active)):
        clients[m.onboarding_id].messages.append(SentMessage(
            template=m.template, key=m.idempotency_key, status=m.status, sent_at=m.sent_at,
            created_at=m.created_at, cycle=m.cycle))
        keys.add(m.idempotency_key)
    for blocker in session.scalars(
            select(Blocker).join(Onboarding, Onboarding.id == Blocker.onboarding_id)
            .where(active, Blocker.resolved_at.is_(None)).order_by(Blocker.id)):
        clients[blocker.onboarding_id].blockers.append(blocker)
    for ob_id, at in session.execute(
            select(ClientResponse.onboarding_id, ClientResponse.at)
            .join(Onboarding, Onboarding.id == ClientResponse.onboarding_id)
            .where(active, ClientResponse.kind == "response")):
        current = clients[ob_id].last_response
        clients[ob_id].last_response = at if current is None or at > current else current
    away = {email: until for email, until in session.execute(
        select(OwnerAway.email, OwnerAway.until).where(away_at(as_of, tz)))}
    return Snapshot(clients=list(clients.values()), away=away, keys=keys)


# -- template context ----------------------------------------------------------------------


def person(email: str) -> dict[str, str]:
    """A person as templates show them."""
    local = email.split("@", 1)[0].replace(".", " ").replace("_", " ")
    return {"name": local.title(), "email": email}


def local_time(playbook: Playbook, at: dt.datetime | None) -> str:
    """A time as a client reads it, in the business's timezone."""
    if at is None:
        return "to be agreed"
    return at.astimezone(playbook.calendar.tz).strftime("%a %d %b %Y, %H:%M %Z")


def context(playbook: Playbook, client: Client, *, owner_email: str | None = None,
            due: dt.datetime | None = None, **extra: Any) -> dict[str, Any]:
    """Everything a template may need about one client."""
    ob = client.row
    stage = playbook.stage(ob.stage)
    items = playbook.required_items(ob.stage)
    missing = [i.label for i in items if i.key not in client.artifacts]
    done = [i.label for i in items if i.key in client.artifacts]
    return {
        "business": business_context(playbook),
        "client": {"id": ob.id, "name": ob.client_name, "segment": ob.segment,
                   "offer": ob.offer, "stage": stage.name, "owner": ob.owner_email,
                   "backup": ob.backup_email},
        "owner": person(owner_email or ob.owner_email),
        "next_action": ob.next_action or f"Complete {stage.name}",
        "due": local_time(playbook, due or ob.next_action_due),
        "missing": missing,
        "done_items": done,
        "first_milestone": ob.first_milestone.isoformat() if ob.first_milestone else "to be agreed",
        **extra,
    }


# -- the reminder cadences -----------------------------------------------------------------


def due_messages(playbook: Playbook, snapshot: Snapshot, as_of: dt.datetime) -> list[Draft]:
    """Every client message due at `as_of` that has not been queued before."""
    drafts: list[Draft] = []
    for client in snapshot.clients:
        drafts.extend(_client_messages(playbook, snapshot, client, as_of))
    return [d for d in drafts if d.key not in snapshot.keys]


def _on_duty(snapshot: Snapshot, client: Client) -> str:
    ob = client.row
    return ob.backup_email if ob.owner_email in snapshot.away else ob.owner_email


def _client_messages(playbook: Playbook, snapshot: Snapshot, client: Client,
                     as_of: dt.datetime) -> list[Draft]:
    ob = client.row
    slas = playbook.slas
    owner = _on_duty(snapshot, client)
    contacts = ob.contacts
    out: list[Draft] = []

    def draft(template: str, key: str, due: dt.datetime | None, sla: str | None,
              cycle: int = 0, **extra: Any) -> Draft:
        return Draft(onboarding_id=ob.id, template=template, recipients=contacts, key=key,
                     # The client reads the timing of the next step (the stage's due), not
                     # this message's own SLA due.
                     context=context(playbook, client, owner_email=owner, cycle=cycle, **extra),
                     due_at=due, sla_key=sla, cycle=cycle)

    welcome = slas["welcome"]
    if as_of >= ob.closed_at:
        due = due_after(playbook, ob.closed_at, welcome.within or 0, welcome.unit)
        out.append(draft("welcome", keys.welcome(ob.id), due, "welcome"))

    if ob.stage == "intake_completion":
        out.extend(_intake_messages(playbook, client, as_of, draft))

    kickoff_held = client.artifacts.get("kickoff_call_held")
    if ob.kickoff_at is not None and kickoff_held is None:
        entered = ob.stage_entered_at if ob.stage == "kickoff_alignment" else as_of
        sla = slas["kickoff_scheduled"]
        due = due_after(playbook, entered, sla.within or 0, sla.unit)
        invite = calendar_invite(
            uid=f"kickoff-{ob.id}-{keys.kickoff_stamp(ob.kickoff_at)}@handoff", start=ob.kickoff_at,
            minutes=KICKOFF_MINUTES, summary=f"Kickoff: {ob.client_name} × "
            f"{playbook.business.name}", organizer=owner, attendees=[*contacts, owner],
            description=f"Kickoff for {ob.offer}. Owner: {owner}.")
        from tasks.mail.message import Attachment

        out.append(Draft(
            onboarding_id=ob.id, template="kickoff_confirmation", recipients=contacts,
            key=keys.kickoff_confirmation(ob.id, ob.kickoff_at),
            context=context(playbook, client, owner_email=owner, due=due,
                            kickoff={"local": local_time(playbook, ob.kickoff_at),
                                     "minutes": KICKOFF_MINUTES}),
            due_at=due, sla_key="kickoff_scheduled",
            attachments=(Attachment(filename="kickoff.ics", content=invite,
                                    mimetype="text/calendar"),)))

    if kickoff_held is not None and as_of >= kickoff_held:
        sla = slas["kickoff_recap"]
        due = due_after(playbook, kickoff_held, sla.within or 0, sla.unit)
        out.append(draft("kickoff_recap", keys.kickoff_recap(ob.id), due, "kickoff_recap"))

    if ob.stage == "setup_execution":
        sla = slas["setup_progress_update"]
        updates = [m for m in client.sent("setup_progress_update")]
        pending = [m for m in updates if m.sent_at is None]
        if not pending:
            last = max([ob.stage_entered_at, *[m.sent_at for m in updates if m.sent_at]])
            due = due_after(playbook, last, sla.every or 0, sla.unit)
            # Send an hour of business time early, so an hourly sweep meets the SLA.
            every_hours = (sla.every or 0) * (business_hours_per_day(playbook) if sla.unit is
                                              TimeUnit.BUSINESS_DAYS else 1)
            send_at = due_after(playbook, last, every_hours - 1, TimeUnit.BUSINESS_HOURS)
            if as_of >= send_at:
                cycle = len(updates) + 1
                out.append(draft("setup_progress_update",
                                 keys.setup_progress_update(ob.id, cycle), due,
                                 "setup_progress_update", cycle=cycle))
    return out


def reply_pause_end(playbook: Playbook, replied_at: dt.datetime) -> dt.datetime:
    """Until when a client's reply holds the reminder cadence (playbook inbox.pause_after_reply)."""
    pause = playbook.inbox.pause_after_reply
    return due_after(playbook, replied_at, pause.within, pause.unit)


def client_missing(playbook: Playbook, client: Client) -> list[str]:
    """What the client still has to send for the current stage, in client wording."""
    return [i.client_label or i.label for i in playbook.required_items(client.row.stage)
            if i.from_client and i.key not in client.artifacts]


def _intake_messages(playbook: Playbook, client: Client, as_of: dt.datetime,
                     draft: Any) -> list[Draft]:
    ob = client.row
    if not client_missing(playbook, client):
        return []  # the client has sent everything: the cadence stops
    request_key = keys.intake_request(ob.id)
    requests = client.sent("intake_request")
    if not requests:
        return [draft("intake_request", request_key, None, None,
                      missing=client_missing(playbook, client))]
    reminders = client.sent("missing_info_reminder")
    chain = requests + reminders
    if any(m.sent_at is None for m in chain):
        return []  # the previous message has not gone out yet
    if client.last_response is not None and as_of < reply_pause_end(playbook,
                                                                    client.last_response):
        return []  # the client just answered: the team reads it before anyone reminds them
    last = max(m.sent_at for m in chain if m.sent_at)
    sla = playbook.slas["intake_reminder"]
    if as_of < last + dt.timedelta(hours=sla.every_min or 24):
        return []
    cycle = len(reminders) + 1
    due = last + dt.timedelta(hours=sla.every_max or 48)
    return [draft("missing_info_reminder", keys.missing_info_reminder(ob.id, cycle), due,
                  "intake_reminder", cycle=cycle, missing=client_missing(playbook, client))]


# -- escalations ---------------------------------------------------------------------------

LADDER = (("owner", 0.0), ("backup", 1.0), ("founder", 2.0))  # business days after the trigger

RULES = {
    "no_response": ("No response after {n} reminder cycles",
                    "Call the client; confirm the intake owner on their side and agree dates."),
    "critical_dependency": ("Critical dependency unresolved over {hours:g} hours",
                            "Unblock the dependency today or reset the timeline with the client."),
    "kickoff_late": ("Kickoff beyond the committed window",
                     "Offer three slots this week; if none fits, log an SLA exception."),
    "kickoff_unscheduled": ("Kickoff not scheduled within {days:g} business days",
                            "Send the client three kickoff slots now."),
    "scope_conflict": ("Scope conflict affecting the timeline",
                       "Founder decision: record it with 'handoff decision record'."),
}


def due_escalations(playbook: Playbook, snapshot: Snapshot, as_of: dt.datetime) -> list[Draft]:
    """Every escalation notice due at `as_of`, to owner, backup or founder, not sent before."""
    drafts: list[Draft] = []
    for client in snapshot.clients:
        for blocker in client.blockers:
            drafts.extend(_blocker_ladder(playbook, snapshot, client, blocker, as_of))
        for rule, trigger, detail in _thresholds(playbook, client, as_of):
            drafts.extend(_threshold_ladder(playbook, snapshot, client, rule, trigger, detail,
                                            as_of))
    return [d for d in drafts if d.key not in snapshot.keys]


def _recipient(playbook: Playbook, snapshot: Snapshot, client: Client,
               role: str) -> tuple[str, str]:
    """The address for a role; an owner who is away hands over to the backup."""
    ob = client.row
    if role == "founder":
        return str(playbook.business.founder.email), "founder"
    if role == "owner" and ob.owner_email in snapshot.away:
        return ob.backup_email, "backup owner (covering for the owner, who is away)"
    if role == "backup":
        return ob.backup_email, "backup owner"
    return ob.owner_email, "owner"


def _age(playbook: Playbook, since: dt.datetime, as_of: dt.datetime) -> str:
    hours = (as_of - since).total_seconds() / 3600
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.1f} days"


def _blocker_ladder(playbook: Playbook, snapshot: Snapshot, client: Client, blocker: Blocker,
                    as_of: dt.datetime) -> list[Draft]:
    kind = playbook.blockers[blocker.type]
    out = []
    path = " → ".join(f"{s.to} after {s.after:g} {s.unit.value.replace('_', ' ')}"
                      for s in kind.escalation)
    boundary = kind.founder_boundary
    for level, step in enumerate(kind.escalation, 1):
        due = due_after(playbook, blocker.opened_at, step.after, step.unit)
        if as_of < due:
            break
        to, role = _recipient(playbook, snapshot, client, step.to)
        out.append(Draft(
            onboarding_id=client.row.id, template=kind.template, recipients=[to],
            key=keys.blocker_escalation(blocker.id, level), due_at=due,
            context=context(playbook, client, blocker={
                "id": blocker.id, "label": kind.label, "note": blocker.note,
                "critical": blocker.critical, "path": path,
                "founder_boundary": playbook.founder_boundaries[boundary] if boundary else None,
                "founder_boundary_key": boundary or ""},
                level=f"level {level} of {len(kind.escalation)}", recipient_role=role,
                age=_age(playbook, blocker.opened_at, as_of))))
    return out


def _thresholds(playbook: Playbook, client: Client,
                as_of: dt.datetime) -> list[tuple[str, dt.datetime, str]]:
    """The escalation thresholds this client crossed, with when each was crossed."""
    ob, rules = client.row, playbook.escalations
    crossed: list[tuple[str, dt.datetime, str]] = []
    # The no-response clock counts the reminders sent since the client last answered.
    reminders = [m for m in client.sent("missing_info_reminder") if m.sent_at and (
        client.last_response is None or m.sent_at > client.last_response)]
    n = rules.no_response_after_reminder_cycles
    if (ob.stage == "intake_completion" and len(reminders) >= n
            and client_missing(playbook, client)):
        nth = sorted(m.sent_at for m in reminders if m.sent_at)[n - 1]
        trigger = nth + dt.timedelta(hours=playbook.slas["intake_reminder"].every_max or 48)
        if as_of >= trigger:
            crossed.append(("no_response", trigger,
                            f"{ob.client_name} has not answered {len(reminders)} reminders "
                            f"about the intake items."))
    limit = rules.critical_dependency_unresolved
    for blocker in client.blockers:
        if blocker.critical:
            trigger = due_after(playbook, blocker.opened_at, limit.after, limit.unit)
            if as_of >= trigger:
                crossed.append((f"critical_dependency:{blocker.id}", trigger,
                                f"Critical {blocker.type.replace('_', ' ')} blocker #{blocker.id} "
                                f"open since {local_time(playbook, blocker.opened_at)}."))
        kind = playbook.blockers[blocker.type]
        if (rules.scope_conflict_affecting_timeline and kind.founder_boundary
                and blocker.affects_timeline):
            crossed.append((f"scope_conflict:{blocker.id}", blocker.opened_at,
                            f"Blocker #{blocker.id} ({kind.label}) moves the timeline: "
                            f"{blocker.note or 'no note'}."))
    held = "kickoff_call_held" in client.artifacts
    if rules.kickoff_beyond_committed_window and ob.kickoff_by and not held:
        window_end = kickoff_window_end(playbook, ob.kickoff_by)
        planned_late = ob.kickoff_at is not None and ob.kickoff_at >= window_end
        if as_of >= window_end or planned_late:
            trigger = min(as_of, window_end) if planned_late else window_end
            crossed.append(("kickoff_late", trigger,
                            f"Kickoff was committed by {ob.kickoff_by.isoformat()}; it is "
                            f"{'planned for ' + local_time(playbook, ob.kickoff_at) if ob.kickoff_at else 'not scheduled'}."))  # noqa: E501
    sched = playbook.slas["kickoff_scheduled"]
    if ob.stage == "kickoff_alignment" and ob.kickoff_at is None:
        trigger = due_after(playbook, ob.stage_entered_at, sched.within or 0, sched.unit)
        if as_of >= trigger:
            crossed.append(("kickoff_unscheduled", trigger,
                            f"{ob.client_name} entered kickoff alignment "
                            f"{local_time(playbook, ob.stage_entered_at)} and has no kickoff."))
    return crossed


def _threshold_ladder(playbook: Playbook, snapshot: Snapshot, client: Client, rule: str,
                      trigger: dt.datetime, detail: str, as_of: dt.datetime) -> list[Draft]:
    base = rule.split(":", 1)[0]
    title, action = RULES[base]
    title = title.format(n=playbook.escalations.no_response_after_reminder_cycles,
                         hours=playbook.escalations.critical_dependency_unresolved.after,
                         days=playbook.slas["kickoff_scheduled"].within or 0)
    ladder = (("founder", 0.0),) if base == "scope_conflict" else LADDER
    out = []
    for level, (role, after) in enumerate(ladder, 1):
        due = due_after(playbook, trigger, after, TimeUnit.BUSINESS_DAYS)
        if as_of < due:
            break
        to, role_text = _recipient(playbook, snapshot, client, role)
        out.append(Draft(
            onboarding_id=client.row.id, template="threshold_escalation", recipients=[to],
            key=keys.threshold_escalation(rule, client.row.id, level), due_at=due,
            context=context(playbook, client, rule={"title": title, "action": action},
                            detail=detail, level=f"level {level} of {len(ladder)}",
                            recipient_role=role_text)))
    return out
