"""The escalation rules: blocker paths and playbook thresholds, each a ladder from owner to
backup to founder, decided over one snapshot."""

from __future__ import annotations

import datetime as dt

from db.models import (
    Blocker,
)
from db.playbook import Playbook, TimeUnit
from tasks.calendar.clock import due_after, kickoff_window_end
from tasks.comms import keys
from tasks.comms.cadences import (
    client_missing,
    message_due,
    no_response_crossing,
    unanswered_reminders,
)
from tasks.comms.context import context, local_time
from tasks.comms.snapshot import Client, Snapshot
from tasks.mail.outbox import Draft

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


Crossing = tuple[str, dt.datetime, str]  # rule (and its blocker), when crossed, what happened


def _thresholds(playbook: Playbook, client: Client, as_of: dt.datetime) -> list[Crossing]:
    """The escalation thresholds this client crossed, with when each was crossed."""
    return [*_no_response(playbook, client, as_of), *_blocker_thresholds(playbook, client, as_of),
            *_kickoff_late(playbook, client, as_of), *_kickoff_unscheduled(playbook, client, as_of)]


def _no_response(playbook: Playbook, client: Client, as_of: dt.datetime) -> list[Crossing]:
    """N reminder cycles sent since the client last answered, with intake items still missing."""
    ob = client.row
    cadence = playbook.slas["intake_reminder"]
    trigger = no_response_crossing(playbook, client)
    if not (cadence.until in (None, ob.stage) and trigger is not None and as_of >= trigger
            and client_missing(playbook, client)):
        return []
    return [("no_response", trigger, f"{ob.client_name} has not answered "
                                     f"{len(unanswered_reminders(playbook, client))} reminders "
                                     "about the intake items.")]


def _blocker_thresholds(playbook: Playbook, client: Client,
                        as_of: dt.datetime) -> list[Crossing]:
    """Critical blockers open too long, and founder-boundary blockers that move the timeline."""
    rules, crossed = playbook.escalations, []
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
    return crossed


def _kickoff_late(playbook: Playbook, client: Client, as_of: dt.datetime) -> list[Crossing]:
    """Past the committed kickoff window, when the playbook escalates it."""
    if not playbook.escalations.kickoff_beyond_committed_window:
        return []
    return kickoff_beyond_window(playbook, client, as_of)


def kickoff_delays(playbook: Playbook, client: Client, as_of: dt.datetime) -> list[Crossing]:
    """Every kickoff delay: past the committed window, or unscheduled past the SLA (the risk
    register's kickoff trigger reads the same rules the escalations do)."""
    return [*kickoff_beyond_window(playbook, client, as_of),
            *_kickoff_unscheduled(playbook, client, as_of)]


def kickoff_beyond_window(playbook: Playbook, client: Client,
                          as_of: dt.datetime) -> list[Crossing]:
    """No kickoff held by the committed window's end, or one planned beyond it."""
    ob = client.row
    if not (ob.kickoff_by and "kickoff_call_held" not in client.artifacts):
        return []
    window_end = kickoff_window_end(playbook, ob.kickoff_by)
    planned_late = ob.kickoff_at is not None and ob.kickoff_at >= window_end
    if as_of < window_end and not planned_late:
        return []
    trigger = min(as_of, window_end) if planned_late else window_end
    planned = (f"planned for {local_time(playbook, ob.kickoff_at)}" if ob.kickoff_at
               else "not scheduled")
    return [("kickoff_late", trigger, f"Kickoff was committed by {ob.kickoff_by.isoformat()}; "
                                      f"it is {planned}.")]


def _kickoff_unscheduled(playbook: Playbook, client: Client,
                         as_of: dt.datetime) -> list[Crossing]:
    """In kickoff alignment past the scheduling SLA with no kickoff set."""
    ob, sched = client.row, playbook.slas["kickoff_scheduled"]
    if not (ob.stage == "kickoff_alignment" and ob.kickoff_at is None):
        return []
    trigger = message_due(playbook, client, sched, as_of)
    if trigger is None or as_of < trigger:
        return []
    return [("kickoff_unscheduled", trigger,
             f"{ob.client_name} entered kickoff alignment "
             f"{local_time(playbook, ob.stage_entered_at)} and has no kickoff.")]


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
