"""The handoff packet: every section the playbook lists, assembled from the record of truth."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Artifact, Blocker, Event, FounderDecision, Packet
from db.playbook import Playbook
from tasks.comms.context import local_time
from tasks.mail.render import render_page
from tasks.onboarding import records
from tasks.risks.views import risk_rows


def _note(artifacts: dict[str, Artifact], key: str, fallback: str = "not recorded") -> str:
    artifact = artifacts.get(key)
    if artifact is None:
        return fallback
    return artifact.note or f"confirmed {artifact.recorded_at:%Y-%m-%d} by {artifact.recorded_by}"


def packet_sections(session: Session, playbook: Playbook,
                    onboarding_id: int) -> list[dict[str, Any]]:
    """Rows for each packet section, in the playbook's order."""
    ob = records.get_onboarding(session, onboarding_id)
    artifacts = {a.key: a for a in session.scalars(
        select(Artifact).where(Artifact.onboarding_id == onboarding_id))}
    blockers = list(session.scalars(select(Blocker).where(Blocker.onboarding_id == onboarding_id)
                                    .order_by(Blocker.opened_at)))
    decisions = list(session.scalars(select(FounderDecision).where(
        FounderDecision.onboarding_id == onboarding_id).order_by(FounderDecision.at)))
    risks = risk_rows(session, playbook, open_only=True, onboarding_id=onboarding_id)
    transitions = list(session.scalars(select(Event).where(
        Event.onboarding_id == onboarding_id, Event.kind == "stage_transition")
        .order_by(Event.at)))
    when = (lambda at: local_time(playbook, at))  # noqa: E731 - a tiny local formatter
    rows: dict[str, list[tuple[str, str]]] = {
        "client_profile": [
            ("Client", ob.client_name), ("Segment", ob.segment), ("Offer", ob.offer),
            ("Contacts", ", ".join(ob.contacts)),
            ("Objectives", _note(artifacts, "scope_and_timeline_captured")),
            ("Success criteria", _note(artifacts, "success_criteria_documented")),
        ],
        "scope": [
            ("Deal terms", _note(artifacts, "deal_terms_confirmed")),
            ("Scope summary", _note(artifacts, "scope_summary_documented")),
            *[(f"Founder decision ({d.boundary})", f"{d.decision} — {d.decided_by}")
              for d in decisions],
        ],
        "timeline": [
            ("Deal closed", when(ob.closed_at)),
            ("Kickoff", when(ob.kickoff_at)),
            ("Kickoff committed by", ob.kickoff_by.isoformat() if ob.kickoff_by else "not set"),
            *[(f"Entered {e.detail.get('to_stage', '?')}", when(e.at)) for e in transitions],
            ("First milestone", ob.first_milestone.isoformat() if ob.first_milestone
             else "to be agreed"),
        ],
        "risks": [
            ("Risk flags", _note(artifacts, "risk_flags_captured")),
            *[(f"{'Open' if b.resolved_at is None else 'Resolved'} blocker: {b.type}",
               f"{b.note or 'no note'}{' (critical)' if b.critical else ''}") for b in blockers],
            *[(f"Open risk #{r['id']}: {r['label']}",
               f"{r['trigger']} — owner {r['owner']}; mitigation: {r['mitigation']}")
              for r in risks],
        ],
        "communication": [
            ("Cadence", _note(artifacts, "communication_cadence_set")),
            ("Responsibilities", _note(artifacts, "responsibilities_clarified")),
            ("Client contacts", ", ".join(ob.contacts)),
        ],
        "escalation_contacts": [
            ("Onboarding owner", ob.owner_email), ("Backup owner", ob.backup_email),
            ("Founder", str(playbook.business.founder.email)),
            *[(f"Lane {k}: {lane.name}", f"{lane.owner} (backup {lane.backup})")
              for k, lane in playbook.lanes.items()],
        ],
    }
    rows["client_profile"] += intake_packet_rows(session, playbook, onboarding_id)
    return [{"key": s.key, "title": s.title, "rows": rows.get(s.key, [])}
            for s in playbook.packet_sections]


def intake_packet_rows(session: Session, playbook: Playbook,
                       onboarding_id: int) -> list[tuple[str, str]]:
    """The client's questionnaire answers and files, one row per question."""
    from tasks.portal import intake

    if playbook.portal is None:
        return []
    done = intake.submission(session, onboarding_id)
    sections = intake.answer_rows(playbook.portal.questionnaire,
                                  intake.answers(session, onboarding_id),
                                  intake.files(session, onboarding_id))
    status = (f"submitted through the portal {local_time(playbook, done.submitted_at)}"
              if done else "not submitted through the portal")
    return [("Intake questionnaire", status), *[(f"{section['title']}: {label}", value)
                                         for section in sections
                                         for label, value in section["rows"]]]


def assemble_packet(session: Session, playbook: Playbook, onboarding_id: int,
                    now: dt.datetime) -> tuple[Packet, dict[str, Any]]:
    """Store a new packet revision (markdown) and return it with its template context."""
    ob = records.get_onboarding(session, onboarding_id)
    revision = int(session.scalar(select(func.coalesce(func.max(Packet.revision), 0)).where(
        Packet.onboarding_id == onboarding_id)) or 0) + 1
    packet = {"revision": revision, "sections": packet_sections(session, playbook, onboarding_id)}
    client = {"id": ob.id, "name": ob.client_name, "segment": ob.segment, "offer": ob.offer}
    markdown = render_page("packet.md", {"client": client, "packet": packet})
    row = Packet(onboarding_id=onboarding_id, revision=revision, markdown=markdown, created_at=now)
    session.add(row)
    session.flush()
    records.log_event(session, "packet_assembled", actor="handoff", onboarding_id=onboarding_id,
                      at=now, revision=revision)
    return row, {"client": client, "packet": packet}
