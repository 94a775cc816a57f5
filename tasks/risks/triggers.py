"""The risk triggers: pure rules over the sweep snapshot and the risk facts, one per rule the
playbook may name. A trigger that fires opens one risk per client and category; a risk closed
after the newest evidence stays closed until new evidence arrives."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from db.playbook import Playbook
from db.playbook.risks import (
    IntakeIncomplete,
    KickoffLate,
    MessageTrouble,
    QaFailed,
    ScopeUnsettled,
)
from tasks.calendar.clock import due_after
from tasks.comms.cadences import client_missing
from tasks.comms.escalations import kickoff_delays
from tasks.comms.snapshot import Client, Snapshot
from tasks.risks.facts import RiskFacts

Evidence = tuple[dt.datetime, str]  # the newest evidence's time, and what fired, in words


@dataclass(frozen=True)
class Firing:
    """A trigger that fired for one client and category, with no risk open for it."""

    onboarding_id: int
    category: str
    at: dt.datetime
    detail: str


def due_risks(playbook: Playbook, snapshot: Snapshot, facts: RiskFacts,
              as_of: dt.datetime) -> list[Firing]:
    """Every risk to open at `as_of`: the trigger fired, no risk of its category is open for the
    client, and none was closed after the newest evidence."""
    firings = []
    for client in snapshot.clients:
        for category, risk in playbook.risks.items():
            key = (client.row.id, category)
            if key in facts.open:
                continue
            evidence = evaluate(playbook, risk.trigger, client, facts, as_of)
            if evidence is None or evidence[0] > as_of:
                continue
            closed = facts.closed.get(key)
            if closed is None or evidence[0] > closed:
                firings.append(Firing(client.row.id, category, evidence[0], evidence[1]))
    return firings


def evaluate(playbook: Playbook, trigger: Any, client: Client, facts: RiskFacts,
             as_of: dt.datetime) -> Evidence | None:
    """The evidence this trigger sees for this client, or None."""
    rule: Callable[..., Evidence | None] = RULES[type(trigger)]
    return rule(playbook, trigger, client, facts, as_of)


def _intake_incomplete(playbook: Playbook, trigger: IntakeIncomplete, client: Client,
                       facts: RiskFacts, as_of: dt.datetime) -> Evidence | None:
    ob = client.row
    missing = client_missing(playbook, client) if ob.stage == "intake_completion" else []
    if not missing:
        return None
    at = due_after(playbook, ob.stage_entered_at, trigger.after, trigger.unit)
    unit = trigger.unit.value.replace("_", " ")
    return at, (f"Intake still incomplete {trigger.after:g} {unit} after it started: "
                f"{'; '.join(missing)}.")


def _kickoff_late(playbook: Playbook, trigger: KickoffLate, client: Client, facts: RiskFacts,
                  as_of: dt.datetime) -> Evidence | None:
    crossings = kickoff_delays(playbook, client, as_of)
    if not crossings:
        return None
    # A kickoff planned beyond the window crosses "now" at every sweep; what it shows is as old
    # as the client's current stage, so a risk closed since stays closed.
    times = [at if at < as_of else client.row.stage_entered_at for _rule, at, _d in crossings]
    return min(times), " ".join(detail for _rule, _at, detail in crossings)


def _scope_unsettled(playbook: Playbook, trigger: ScopeUnsettled, client: Client,
                     facts: RiskFacts, as_of: dt.datetime) -> Evidence | None:
    found = [(b.opened_at, f"Open {playbook.blockers[b.type].label.lower()} blocker "
                           f"#{b.id}: {b.note or 'no note'}.")
             for b in client.blockers if b.type in trigger.blockers and b.opened_at <= as_of]
    found += [(at, f"Founder decision ({playbook.founder_boundaries[boundary]}) recorded.")
              for boundary, at in facts.decisions.get(client.row.id, [])
              if boundary in trigger.decisions and at <= as_of]
    return _newest(found)


def _qa_failed(playbook: Playbook, trigger: QaFailed, client: Client, facts: RiskFacts,
               as_of: dt.datetime) -> Evidence | None:
    failed = sorted(at for at in facts.qa_failures.get(client.row.id, []) if at <= as_of)
    if len(failed) < trigger.failures:
        return None
    return failed[-1], f"{len(failed)} failed QA check{'s' if len(failed) != 1 else ''} (rework)."


def _message_trouble(playbook: Playbook, trigger: MessageTrouble, client: Client,
                     facts: RiskFacts, as_of: dt.datetime) -> Evidence | None:
    found = [(at, f"Client message {template} {status}.")
             for template, status, at in facts.troubled.get(client.row.id, [])
             if status in trigger.statuses and at <= as_of]
    asked = sorted(at for at in facts.followups.get(client.row.id, []) if at <= as_of)
    if trigger.followups is not None and len(asked) >= trigger.followups:
        found.append((asked[-1], f"The client asked for status {len(asked)} times."))
    return _newest(found)


def _newest(found: list[Evidence]) -> Evidence | None:
    if not found:
        return None
    return max(at for at, _ in found), " ".join(text for _, text in sorted(found))


RULES: dict[type, Callable[..., Evidence | None]] = {
    IntakeIncomplete: _intake_incomplete, KickoffLate: _kickoff_late,
    ScopeUnsettled: _scope_unsettled, QaFailed: _qa_failed, MessageTrouble: _message_trouble,
}
