"""The reminder cadences: which client messages are due, decided by pure functions over a snapshot.

The flow asks the same functions about one client, so a sweep and a flow can never disagree
about a message."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from db.playbook import Playbook, TimeUnit
from tasks.calendar.clock import business_hours_per_day, due_after
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
        out.append(_kickoff_confirmation(playbook, client, owner, as_of))

    if kickoff_held is not None and as_of >= kickoff_held:
        sla = slas["kickoff_recap"]
        due = due_after(playbook, kickoff_held, sla.within or 0, sla.unit)
        out.append(draft("kickoff_recap", keys.kickoff_recap(ob.id), due, "kickoff_recap"))

    if ob.stage == "setup_execution":
        out.extend(_progress_update(playbook, client, as_of, draft))
    return out


def _kickoff_confirmation(playbook: Playbook, client: Client, owner: str,
                          as_of: dt.datetime) -> Draft:
    """The kickoff's confirmation with its calendar invite (a moved kickoff is a new one)."""
    ob = client.row
    assert ob.kickoff_at is not None
    entered = ob.stage_entered_at if ob.stage == "kickoff_alignment" else as_of
    sla = playbook.slas["kickoff_scheduled"]
    due = due_after(playbook, entered, sla.within or 0, sla.unit)
    invite = calendar_invite(
        uid=f"kickoff-{ob.id}-{keys.kickoff_stamp(ob.kickoff_at)}@handoff", start=ob.kickoff_at,
        minutes=KICKOFF_MINUTES, summary=f"Kickoff: {ob.client_name} × "
        f"{playbook.business.name}", organizer=owner, attendees=[*ob.contacts, owner],
        description=f"Kickoff for {ob.offer}. Owner: {owner}.")
    return Draft(
        onboarding_id=ob.id, template="kickoff_confirmation", recipients=ob.contacts,
        key=keys.kickoff_confirmation(ob.id, ob.kickoff_at),
        context=context(playbook, client, owner_email=owner, due=due,
                        kickoff={"local": local_time(playbook, ob.kickoff_at),
                                 "minutes": KICKOFF_MINUTES}),
        due_at=due, sla_key="kickoff_scheduled",
        attachments=(Attachment(filename="kickoff.ics", content=invite,
                                mimetype="text/calendar"),))


def _progress_update(playbook: Playbook, client: Client, as_of: dt.datetime,
                     draft: DraftMaker) -> list[Draft]:
    """The next setup progress update, once the previous one went out and the next is near."""
    ob, sla = client.row, playbook.slas["setup_progress_update"]
    updates = [m for m in client.sent("setup_progress_update")]
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
    return [draft("setup_progress_update", keys.setup_progress_update(ob.id, cycle), due,
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


def _intake_messages(playbook: Playbook, client: Client, as_of: dt.datetime,
                     draft: DraftMaker) -> list[Draft]:
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
