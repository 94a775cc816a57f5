"""The reminder and escalation sweeps: one snapshot, pure rules, one batch, one connection."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from sqlalchemy.orm import Session, sessionmaker

from db.lease import lease
from db.playbook import Playbook
from db.settings import Settings
from tasks.calendar.clock import parse_as_of
from tasks.comms.cadences import due_messages
from tasks.comms.escalations import due_escalations
from tasks.comms.snapshot import load_snapshot
from tasks.mail.delivery import deliver
from tasks.mail.outbox import Draft, enqueue_many
from tasks.onboarding.records import log_event
from tasks.risks.register import open_due_risks


@dataclass
class SweepReport:
    """What a sweep queued and delivered."""

    as_of: str
    clients: int
    queued_messages: int
    queued_escalations: int
    opened_risks: int
    sent: int
    retried: int
    failed: int
    uncertain: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def queue_due(session: Session, playbook: Playbook, as_of: dt.datetime, *,
              messages: bool = True, escalations: bool = True,
              onboarding_ids: list[int] | None = None,
              risks: list[int] | None = None) -> tuple[int, list[Draft], list[Draft]]:
    """Queue every message and escalation due at `as_of`: (clients, messages, escalations).
    With escalations, the risks whose triggers fired are opened too (their ids into `risks`)."""
    snapshot = load_snapshot(session, as_of, onboarding_ids, tz=playbook.calendar.tz)
    due_msgs = due_messages(playbook, snapshot, as_of) if messages else []
    due_escs = due_escalations(playbook, snapshot, as_of) if escalations else []
    enqueue_many(session, playbook, due_msgs + due_escs, now=as_of)
    if escalations:
        opened = open_due_risks(session, playbook, snapshot, as_of)
        if risks is not None:
            risks.extend(opened)
    for draft in due_escs:
        role = draft.context.get("recipient_role", "")
        if isinstance(role, str) and "covering" in role:
            log_event(session, "handover_to_backup", actor="handoff",
                      onboarding_id=draft.onboarding_id, at=as_of, key=draft.key,
                      to=draft.recipients[0])
    return len(snapshot.clients), due_msgs, due_escs


def run_sweep(factory: sessionmaker[Session], playbook: Playbook, settings: Settings,
              as_of: dt.datetime, *, messages: bool = True,
              escalations: bool = True) -> SweepReport:
    """Queue what is due under a lease, then deliver over one connection."""
    name = "sweep:" + "+".join(k for k, on in (("reminders", messages),
                                              ("escalations", escalations)) if on)
    with lease(factory, name):
        risks: list[int] = []
        with factory.begin() as session:
            clients, msgs, escs = queue_due(session, playbook, as_of, messages=messages,
                                            escalations=escalations, risks=risks)
        delivered = deliver(factory, playbook, settings, now=as_of)
    return SweepReport(as_of=as_of.isoformat(), clients=clients, queued_messages=len(msgs),
                       queued_escalations=len(escs), opened_risks=len(risks), sent=delivered.sent,
                       retried=delivered.retried, failed=delivered.failed,
                       uncertain=delivered.uncertain)


def sweep_now(as_of: str | None, *, messages: bool, escalations: bool) -> dict[str, object]:
    """Run a sweep against the configured database; a sweep already running elsewhere is skipped."""
    from db.lease import LeaseHeld
    from db.playbook import get_playbook
    from db.session import session_factory
    from db.settings import get_settings

    try:
        report = run_sweep(session_factory(), get_playbook(), get_settings(),
                           parse_as_of(as_of), messages=messages, escalations=escalations)
    except LeaseHeld as exc:
        return {"skipped": str(exc)}
    return report.as_dict()
