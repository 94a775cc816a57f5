"""What one client may see about themselves, in their words: a read model for the portal pages.

Only this client's facts, and none of the team's internals (no notes, blockers or escalations).
Due dates are the ones the sweeps work to (the stage's business-time SLA in `next_action_due`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from db.models import Onboarding
from db.playbook import Playbook
from tasks.comms.context import local_time, person
from tasks.mail.outbox import owners_away
from tasks.onboarding import records
from tasks.onboarding.exits import held_items
from tasks.portal import intake


def client_page(session: Session, playbook: Playbook, ob: Onboarding,
                now: dt.datetime) -> dict[str, Any]:
    """The status page's context: stages, what is awaited from the client, next step, owner."""
    order = [s.key for s in playbook.stages]
    words = playbook.portal.stages if playbook.portal else {}
    finished = ob.status == "ready"
    current = len(order) if finished else order.index(ob.stage)
    stages = []
    for index, stage in enumerate(playbook.stages):
        said = words.get(stage.key)
        stages.append({"title": said.title if said else stage.name,
                       "what": said.what if said else "",
                       "state": ("done" if index < current else
                                 "current" if index == current else "upcoming")})
    have = records.recorded_keys(session, ob.id)
    awaited = [] if finished else [
        i.client_label or i.label for i in held_items(playbook, ob.stage, ob.stage_items)
        if i.from_client and i.key not in have]
    owner = ob.owner_email
    if owners_away(session, [owner], now, tz=playbook.calendar.tz):
        owner = ob.backup_email
    following = None if finished else playbook.next_stage(ob.stage)
    submitted = intake.submission(session, ob.id)
    questionnaire = playbook.portal.questionnaire if playbook.portal else None
    progress = None
    if questionnaire is not None:
        saved = intake.answers(session, ob.id)
        uploaded = {f.field_key for f in intake.files(session, ob.id)}
        required = [f for f in questionnaire.fields if f.required]
        missing = intake.missing_required(questionnaire, saved, uploaded)
        progress = {"answered": len(required) - len(missing), "required": len(required),
                    "started": bool(saved or uploaded)}

    def when(at: dt.datetime | None) -> str | None:
        """A time as the client reads it: in their own timezone when it is known."""
        return local_time(playbook, at, ob.client_tz) if at else None

    return {
        "client": {"name": ob.client_name, "offer": ob.offer},
        "finished": finished,
        "active": ob.status == "active",
        "stages": stages,
        "current": stages[current] if not finished else None,
        "awaited": awaited,
        "due": when(ob.next_action_due),
        "next": ({"title": (words[following.key].title if following.key in words
                            else following.name)} if following else None),
        "kickoff": when(ob.kickoff_at),
        "first_milestone": ob.first_milestone.isoformat() if ob.first_milestone else None,
        "owner": person(owner),
        "questionnaire": {"title": questionnaire.title if questionnaire else None,
                          "submitted_at": when(submitted.submitted_at) if submitted else None,
                          "progress": progress},
        "files": [{"id": f.id, "name": f.original_name, "size": f.size,
                   "at": when(f.uploaded_at)}
                  for f in intake.files(session, ob.id)],
    }
