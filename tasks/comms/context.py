"""What a template may say about one client: names, local times, the next action."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from db.playbook import Playbook
from tasks.comms.snapshot import Client
from tasks.mail.outbox import business_context
from tasks.onboarding.exits import held_items


def person(email: str) -> dict[str, str]:
    """A person as templates show them."""
    local = email.split("@", 1)[0].replace(".", " ").replace("_", " ")
    return {"name": local.title(), "email": email}


def local_time(playbook: Playbook, at: dt.datetime | None, zone: str | None = None) -> str:
    """A time as a person reads it: in `zone` (a client's own timezone) when given, else in the
    business's."""
    if at is None:
        return "to be agreed"
    tz = ZoneInfo(zone) if zone else playbook.calendar.tz
    return at.astimezone(tz).strftime("%a %d %b %Y, %H:%M %Z")


def context(playbook: Playbook, client: Client, *, owner_email: str | None = None,
            due: dt.datetime | None = None, **extra: Any) -> dict[str, Any]:
    """Everything a template may need about one client."""
    ob = client.row
    stage = playbook.stage(ob.stage)
    items = held_items(playbook, ob.stage, ob.stage_items)
    missing = [i.label for i in items if i.key not in client.artifacts]
    done = [i.label for i in items if i.key in client.artifacts]
    return {
        "business": business_context(playbook),
        "client": {"id": ob.id, "name": ob.client_name, "segment": ob.segment,
                   "offer": ob.offer, "stage": stage.name, "owner": ob.owner_email,
                   "backup": ob.backup_email},
        "owner": person(owner_email or ob.owner_email),
        "next_action": ob.next_action or f"Complete {stage.name}",
        # Only client messages show `due`: in the client's own timezone when it is known.
        "due": local_time(playbook, due or ob.next_action_due, ob.client_tz),
        "missing": missing,
        "done_items": done,
        "first_milestone": ob.first_milestone.isoformat() if ob.first_milestone else "to be agreed",
        **extra,
    }
