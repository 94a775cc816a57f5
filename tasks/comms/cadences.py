"""The reminder cadences: which client messages are due, decided by pure functions over a snapshot.

The flow asks the same functions about one client, so a sweep and a flow can never disagree
about a message."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from db.playbook import STAGE_ORDER, CadenceEnd, Playbook, TimeUnit
from db.playbook.catalog import template_needs
from db.playbook.model import PACKET
from db.playbook.parts import Sla
from tasks.calendar.clock import business_hours_per_day, clock_start, due_after
from tasks.comms import keys
from tasks.comms.context import context, local_time
from tasks.comms.snapshot import Client, Snapshot
from tasks.mail.message import Attachment
from tasks.mail.outbox import Draft
from tasks.mail.render import calendar_invite
from tasks.onboarding.exits import held_items

KICKOFF_MINUTES = 45
DraftMaker = Callable[..., Draft]  # a client message of this client, from its template and key


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
    out = entry_and_exit_messages(playbook, client, owner, as_of)

    def draft(template: str, key: str, due: dt.datetime | None, sla: str | None,
              cycle: int = 0, **extra: Any) -> Draft:
        return Draft(onboarding_id=ob.id, template=template, recipients=contacts, key=key,
                     # The client reads the timing of the next step (the stage's due), not
                     # this message's own SLA due.
                     context=context(playbook, client, owner_email=owner, cycle=cycle, **extra),
                     due_at=due, sla_key=sla, cycle=cycle)

    if slas["intake_reminder"].until in (None, ob.stage):
        out.extend(_reminders(playbook, client, as_of, draft, owner))

    kickoff_held = client.artifacts.get("kickoff_call_held")
    if ob.kickoff_at is not None and kickoff_held is None:
        out.append(_kickoff_confirmation(playbook, client, owner, as_of))

    if kickoff_held is not None and as_of >= kickoff_held:
        sla = slas["kickoff_recap"]
        out.append(draft(sla.template, keys.kickoff_recap(ob.id),
                         message_due(playbook, client, sla, as_of), "kickoff_recap"))

    if slas["setup_progress_update"].while_ in (None, ob.stage):
        out.extend(_progress_update(playbook, client, as_of, draft))
    return out


def message_due(playbook: Playbook, client: Client, sla: Sla,
                as_of: dt.datetime) -> dt.datetime | None:
    """A 'within' SLA's due: counted from its playbook `from` (from now when that has not
    happened yet, e.g. a stage the client is not in); None for a rhythm."""
    if sla.within is None:
        return None
    ob = client.row
    start = clock_start(sla.from_ or "stage_entered", closed_at=ob.closed_at, stage=ob.stage,
                        entered_at=ob.stage_entered_at, artifacts=client.artifacts)
    return due_after(playbook, start or as_of, sla.within, sla.unit)


def entry_and_exit_messages(playbook: Playbook, client: Client, owner: str,
                            as_of: dt.datetime) -> list[Draft]:
    """The playbook's on_enter messages of every stage the client has entered and on_exit
    messages of every stage it has left, each once per client: one the client moved past before
    a sweep saw it still goes out (a late welcome beats none), except a request for items the
    client no longer owes."""
    ob = client.row
    if as_of < ob.stage_entered_at:
        return []
    done = len(playbook.stages) if ob.status == "ready" else STAGE_ORDER.index(ob.stage)
    names = [n for stage in playbook.stages[:done] for n in (*stage.on_enter, *stage.on_exit)]
    if ob.status == "active":
        names += playbook.stage(ob.stage).on_enter
    return _stage_messages(playbook, client, owner, as_of, names)


def _stage_messages(playbook: Playbook, client: Client, owner: str, as_of: dt.datetime,
                    templates: list[str]) -> list[Draft]:
    ob, specs = client.row, template_needs()
    missing = client_missing(playbook, client)
    out = []
    for name in templates:
        spec = specs[name]
        if name == PACKET or ("missing" in spec.needs and not missing):
            continue  # the packet step sends the packet; a request for nothing is not sent
        found = playbook.sla_for(name)
        recipients = {"client": ob.contacts, "team": [owner],
                      "founder": [str(playbook.business.founder.email)]}[spec.audience]
        extra: dict[str, Any] = {"missing": missing} if spec.audience == "client" else {}
        out.append(Draft(
            onboarding_id=ob.id, template=name, recipients=recipients,
            key=keys.stage_message(name, ob.id),
            context=context(playbook, client, owner_email=owner, **extra),
            due_at=message_due(playbook, client, found[1], as_of) if found else None,
            sla_key=found[0] if found and found[1].within else None))
    return out


def _kickoff_confirmation(playbook: Playbook, client: Client, owner: str,
                          as_of: dt.datetime) -> Draft:
    """The kickoff's confirmation with its calendar invite (a moved kickoff is a new one)."""
    ob = client.row
    assert ob.kickoff_at is not None
    sla = playbook.slas["kickoff_scheduled"]
    due = message_due(playbook, client, sla, as_of)
    invite = calendar_invite(
        uid=f"kickoff-{ob.id}-{keys.kickoff_stamp(ob.kickoff_at)}@handoff", start=ob.kickoff_at,
        minutes=KICKOFF_MINUTES, summary=f"Kickoff: {ob.client_name} × "
        f"{playbook.business.name}", organizer=owner, attendees=[*ob.contacts, owner],
        description=f"Kickoff for {ob.offer}. Owner: {owner}.")
    return Draft(
        onboarding_id=ob.id, template=sla.template, recipients=ob.contacts,
        key=keys.kickoff_confirmation(ob.id, ob.kickoff_at),
        context=context(playbook, client, owner_email=owner, due=due,
                        kickoff={"local": local_time(playbook, ob.kickoff_at, ob.client_tz),
                                 "minutes": KICKOFF_MINUTES}),
        due_at=due, sla_key="kickoff_scheduled",
        attachments=(Attachment(filename="kickoff.ics", content=invite,
                                mimetype="text/calendar"),))


def _progress_update(playbook: Playbook, client: Client, as_of: dt.datetime,
                     draft: DraftMaker) -> list[Draft]:
    """The next setup progress update, once the previous one went out and the next is near."""
    ob, sla = client.row, playbook.slas["setup_progress_update"]
    updates = client.sent(sla.template)
    if any(m.sent_at is None for m in updates):
        return []
    last = max([ob.stage_entered_at, *[m.sent_at for m in updates if m.sent_at]])
    due = due_after(playbook, last, sla.every or 0, sla.unit)
    # Send an hour of business time early, so an hourly sweep meets the SLA.
    every_hours = (sla.every or 0) * (business_hours_per_day(playbook) if sla.unit is
                                      TimeUnit.BUSINESS_DAYS else 1)
    send_at = due_after(playbook, last, every_hours - 1, TimeUnit.BUSINESS_HOURS)
    if as_of < send_at:
        return []
    cycle = len(updates) + 1
    return [draft(sla.template, keys.setup_progress_update(ob.id, cycle), due,
                  "setup_progress_update", cycle=cycle)]


def reply_pause_end(playbook: Playbook, replied_at: dt.datetime) -> dt.datetime:
    """Until when a client's reply holds the reminder cadence (playbook inbox.pause_after_reply)."""
    pause = playbook.inbox.pause_after_reply
    return due_after(playbook, replied_at, pause.within, pause.unit)


def client_missing(playbook: Playbook, client: Client) -> list[str]:
    """What the client still has to send for the current stage, in client wording."""
    return [i.client_label or i.label
            for i in held_items(playbook, client.row.stage, client.row.stage_items)
            if i.from_client and i.key not in client.artifacts]


def _reminders(playbook: Playbook, client: Client, as_of: dt.datetime,
               draft: DraftMaker, owner: str) -> list[Draft]:
    """The missing-info reminder cadence (slas.intake_reminder): it starts after the stage's
    on_enter messages went out (or at its entry if it sends none), stops once the client has
    sent everything, and ends by the playbook's end rule (max_cycles, at_escalation)."""
    ob, sla = client.row, playbook.slas["intake_reminder"]
    if not client_missing(playbook, client):
        return []  # the client has sent everything: the cadence stops
    opening = [n for n in playbook.stage(ob.stage).on_enter if n != PACKET]
    if any(not client.sent(n) for n in opening):
        return []  # the stage's own messages go out first
    reminders = client.sent(sla.template)
    chain = [m for n in opening for m in client.sent(n)] + reminders
    if any(m.sent_at is None for m in chain):
        return []  # the previous message has not gone out yet
    last = max([ob.stage_entered_at, *[m.sent_at for m in chain if m.sent_at]])
    pace = reminder_pace(playbook, client)
    if pace.ended:
        return _reminders_ended(playbook, client, owner, last, pace, as_of) if pace.used_up \
            else []  # stopped at the escalation: its ladder hands the client to a person
    if pace.paused:
        return []  # the no-response escalation hands the client to a person until they answer
    if client.last_response is not None and as_of < reply_pause_end(playbook,
                                                                    client.last_response):
        return []  # the client just answered: the team reads it before anyone reminds them
    if as_of < _after(playbook, last, pace.every_min):
        return []
    cycle = len(reminders) + 1
    due = _after(playbook, last, pace.every_max)
    return [draft(sla.template, keys.missing_info_reminder(ob.id, cycle), due,
                  "intake_reminder", cycle=cycle, missing=client_missing(playbook, client),
                  final=pace.next_is_last)]


# -- how a reminder cadence ends ------------------------------------------------------------------

SLOWDOWN = 2  # `at_escalation: slow`: reminders this many times further apart


@dataclass(frozen=True)
class ReminderPace:
    """Where a client's reminder cadence stands: its spacing now, and whether it has ended."""

    every_min: float
    every_max: float
    ended: bool  # no reminder will follow in this stage
    used_up: bool  # ended by max_cycles: the owner is told (else the escalation tells them)
    paused: bool  # none until the client answers (`at_escalation: pause`)
    next_is_last: bool  # the next reminder is the last one (the client is told so)


def _after(playbook: Playbook, start: dt.datetime, amount: float) -> dt.datetime:
    return due_after(playbook, start, amount, playbook.slas["intake_reminder"].unit)


def unanswered_reminders(playbook: Playbook, client: Client) -> list[dt.datetime]:
    """When each reminder sent since the client last answered went out, oldest first."""
    template = playbook.slas["intake_reminder"].template
    return sorted(m.sent_at for m in client.sent(template) if m.sent_at and (
        client.last_response is None or m.sent_at > client.last_response))


def no_response_crossing(playbook: Playbook, client: Client) -> dt.datetime | None:
    """When the no-response escalation crosses: the Nth unanswered reminder's longest spacing
    after it (N: escalations.no_response_after_reminder_cycles); None before that reminder."""
    n = playbook.escalations.no_response_after_reminder_cycles
    unanswered = unanswered_reminders(playbook, client)
    if len(unanswered) < n:
        return None
    return _after(playbook, unanswered[n - 1], playbook.slas["intake_reminder"].every_max or 48)


def reminder_pace(playbook: Playbook, client: Client) -> ReminderPace:
    """The cadence's end rule (slas.intake_reminder max_cycles and at_escalation) applied to
    what was sent: the Nth unanswered reminder arms the no-response escalation; from it on the
    cadence pauses until the client answers, slows, or stops for the stage."""
    sla = playbook.slas["intake_reminder"]
    every_min, every_max = sla.every_min or 24, sla.every_max or 48
    n = playbook.escalations.no_response_after_reminder_cycles
    sent = len(client.sent(sla.template))
    unanswered = len(unanswered_reminders(playbook, client))
    cap = sla.max_cycles
    if sla.at_escalation is CadenceEnd.STOP:
        cap = min(cap or n, n)
    armed = unanswered >= n
    if armed and sla.at_escalation is CadenceEnd.SLOW:
        every_min, every_max = every_min * SLOWDOWN, every_max * SLOWDOWN
    arms_next = unanswered + 1 == n and sla.at_escalation is CadenceEnd.PAUSE
    return ReminderPace(
        every_min=every_min, every_max=every_max,
        ended=cap is not None and sent >= cap,
        used_up=sla.max_cycles is not None and sent >= sla.max_cycles,
        paused=armed and sla.at_escalation is CadenceEnd.PAUSE,
        next_is_last=(cap is not None and sent + 1 >= cap) or arms_next)


def _reminders_ended(playbook: Playbook, client: Client, owner: str, last: dt.datetime,
                     pace: ReminderPace, as_of: dt.datetime) -> list[Draft]:
    """The owner's notice that the reminders ended with items still missing: once the last
    reminder's longest spacing has passed, a person takes the client over."""
    ob = client.row
    handover = _after(playbook, last, pace.every_max)
    if as_of < handover:
        return []
    return [Draft(onboarding_id=ob.id, template="reminders_ended", recipients=[owner],
                  key=keys.reminders_ended(ob.id, ob.stage), due_at=handover,
                  context=context(playbook, client, owner_email=owner,
                                  missing=client_missing(playbook, client),
                                  reminders=len(client.sent(
                                      playbook.slas["intake_reminder"].template)),
                                  last_sent=local_time(playbook, last)))]
