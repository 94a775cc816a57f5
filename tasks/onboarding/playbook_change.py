"""What a playbook edit changes for the clients in flight, read before anyone deploys the file:
the items each stage gains or loses and whom they concern, the templates no longer used and the
messages still queued for them, the SLAs and calendar and the due dates they move, the version.

It reads and never writes. What an edit does to a client already in a stage is the rule in
tasks/onboarding/exits.py (`held_items`): a new item applies from the next stage entry, or at
once after `handoff playbook apply --apply-now`; a removed item holds nobody back.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Artifact, Communication, Onboarding
from db.playbook import STAGE_ORDER, Calendar, Playbook
from db.playbook.parts import Sla, StageSla
from tasks.calendar.clock import due_after
from tasks.onboarding.exits import held_items

UNSENT = ("queued", "sending", "failed", "uncertain")  # messages not (yet) delivered
HOUR = dt.timedelta(hours=1)


def sla_words(sla: Sla | StageSla) -> str:
    """An SLA as `playbook show` and `playbook check` print it."""
    unit = sla.unit.value.replace("_", " ")
    if sla.within:
        return f"within {sla.within:g} {unit}"
    assert isinstance(sla, Sla)
    if sla.every:
        return f"every {sla.every:g} {unit}"
    return f"every {sla.every_min:g}–{sla.every_max:g} {unit}"


def calendar_words(calendar: Calendar) -> str:
    """A business calendar in one line."""
    closed = f", {len(calendar.closed_dates)} closed dates" if calendar.closed_dates else ""
    return (f"{', '.join(calendar.workdays)} {calendar.hours.start:%H:%M}–"
            f"{calendar.hours.end:%H:%M} {calendar.timezone}, holidays "
            f"{calendar.holidays.country or 'none'}{closed}")


def templates_used(playbook: Playbook) -> set[str]:
    """Every message template the playbook names (stage entry and exit, SLAs, blockers)."""
    names = {t for s in playbook.stages for t in (*s.on_enter, *s.on_exit)}
    names |= {sla.template for sla in playbook.slas.values()}
    return names | {b.template for b in playbook.blockers.values()}


def _content(playbook: Playbook) -> dict[str, Any]:
    return playbook.model_dump(mode="json", by_alias=True, exclude={"version"})


def playbook_change(session: Session, current: Playbook, candidate: Playbook) -> dict[str, Any]:
    """What deploying `candidate` over `current` changes for the active clients."""
    clients = list(session.execute(
        select(Onboarding.id, Onboarding.stage, Onboarding.stage_entered_at,
               Onboarding.stage_items).where(Onboarding.status == "active")))
    have: dict[int, set[str]] = defaultdict(set)
    for onboarding_id, key in session.execute(
            select(Artifact.onboarding_id, Artifact.key).join(Onboarding)
            .where(Onboarding.status == "active")):
        have[onboarding_id].add(key)
    unsent = Counter(dict(session.execute(
        select(Communication.template, func.count()).where(Communication.status.in_(UNSENT))
        .group_by(Communication.template)).tuples().all()))
    before, after = _content(current), _content(candidate)
    return {
        "version": {"from": current.version, "to": candidate.version,
                    "content_changed": before != after,
                    "not_bumped": before != after and current.version == candidate.version},
        "sections_changed": [k for k in after if before.get(k) != after[k]],
        "active_clients": len(clients),
        "items": _items(current, candidate, clients, have),
        "templates_removed": [{"template": t, "unsent": unsent[t]}
                              for t in sorted(templates_used(current) - templates_used(candidate))],
        "templates_added": sorted(templates_used(candidate) - templates_used(current)),
        "stage_slas": _stage_slas(current, candidate, clients),
        "message_slas": _message_slas(current, candidate, unsent),
        "calendar": (None if current.calendar == candidate.calendar else
                     {"from": calendar_words(current.calendar),
                      "to": calendar_words(candidate.calendar)}),
    }


def _items(current: Playbook, candidate: Playbook, clients: list[Any],
           have: dict[int, set[str]]) -> list[dict[str, Any]]:
    """Each item a stage gains or loses: how many clients in the stage lack it (a new item holds
    them back only with --apply-now; a removed one held them back until now) and how many
    clients in earlier stages lack it (they meet a new item when they enter the stage)."""
    changes = []
    for index, stage in enumerate(candidate.stages):
        old = {i.key: i for i in current.required_items(stage.key)}
        new = {i.key: i for i in candidate.required_items(stage.key)}
        here = [c for c in clients if c.stage == stage.key]
        earlier = [c for c in clients if STAGE_ORDER.index(c.stage) < index]
        for change, items, other in (("added", new, old), ("removed", old, new)):
            for key in (k for k in items if k not in other):
                held = [c for c in here if change == "added" or key in
                        {i.key for i in held_items(current, stage.key, c.stage_items)}]
                changes.append({
                    "stage": stage.key, "stage_name": stage.name, "change": change, "key": key,
                    "label": items[key].label,
                    "in_stage_missing": sum(key not in have[c.id] for c in held),
                    # entered before stage requirements were recorded: held to the file in force
                    "in_stage_unrecorded": sum(key not in have[c.id] and c.stage_items is None
                                               for c in held),
                    "earlier_missing": sum(key not in have[c.id] for c in earlier)})
    return changes


def _stage_slas(current: Playbook, candidate: Playbook,
                clients: list[Any]) -> list[dict[str, Any]]:
    """Each stage whose due dates move (its SLA or the calendar changed): the clients in it
    whose due date moves, and the earliest and latest shift in clock hours."""
    rows = []
    for stage in candidate.stages:
        old_sla, new_sla = current.stage(stage.key).sla, stage.sla
        if old_sla == new_sla and current.calendar == candidate.calendar:
            continue
        shifts = [due_after(candidate, c.stage_entered_at, new_sla.within, new_sla.unit)
                  - due_after(current, c.stage_entered_at, old_sla.within, old_sla.unit)
                  for c in clients if c.stage == stage.key]
        moved = [s / HOUR for s in shifts if s]
        if old_sla == new_sla and not moved:
            continue
        rows.append({"stage": stage.key, "stage_name": stage.name,
                     "from": sla_words(old_sla), "to": sla_words(new_sla),
                     "clients": len(shifts), "moved": len(moved),
                     "earliest_shift_hours": round(min(moved), 1) if moved else None,
                     "latest_shift_hours": round(max(moved), 1) if moved else None})
    return rows


def _message_slas(current: Playbook, candidate: Playbook,
                  unsent: Counter[str]) -> list[dict[str, Any]]:
    """Each message SLA added, removed or changed, with the messages of its template unsent."""
    rows = []
    for key in [*current.slas, *(k for k in candidate.slas if k not in current.slas)]:
        old, new = current.slas.get(key), candidate.slas.get(key)
        if old == new:
            continue
        template = new.template if new else old.template if old else key
        rows.append({"sla": key, "template": template,
                     "from": sla_words(old) if old else None,
                     "to": sla_words(new) if new else None, "unsent": unsent[template]})
    return rows
