"""The seed's guardrails refuse, explain themselves and leave the database unchanged — on both DBs."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.models import Onboarding
from db.playbook import Playbook
from db.validation import GuardrailError, HandoffError, NotFoundError
from tasks.onboarding import records
from tests.factories import CLOSED, add_items, new_onboarding, snapshot, stage_items

LATER = CLOSED + dt.timedelta(hours=1)


def _refused(session: Session, action, match: str) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(session)
    with pytest.raises(HandoffError, match=match):
        with session.begin():
            action()
    assert snapshot(session) == before


def _walk_to(session: Session, playbook: Playbook, ob_id: int, stage: str) -> None:
    """Advance through every stage before `stage`, recording exactly what each needs."""
    for s in playbook.stages:
        if s.key == stage:
            return
        add_items(session, playbook, ob_id, stage_items(playbook, s.key))
        if s.gates:
            with session.begin():
                records.record_qa(session, ob_id, passed=True, reason=None, by="qa", at=LATER)
        with session.begin():
            records.advance(session, playbook, ob_id, actor="test", at=LATER)


def test_no_transition_without_required_artifacts(session: Session, playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    add_items(session, playbook, ob_id, ["deal_terms_confirmed"])
    _refused(session, lambda: records.advance(session, playbook, ob_id, actor="va"),
             "cannot leave close_confirmation: missing artifacts scope_and_timeline_captured$")
    with session.begin():
        assert records.get_onboarding(session, ob_id).stage == "close_confirmation"


def test_creation_records_owner_assignment_and_given_terms(session: Session,
                                                           playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook, terms="SOW v2, net 30", scope="SEO + ads, 3 mo")
    with session.begin():
        ob = records.get_onboarding(session, ob_id)
        assert records.missing_items(session, playbook, ob) == []
        notes = dict(session.execute(text(
            "SELECT key, note FROM artifacts WHERE onboarding_id = :i"), {"i": ob_id}).all())
    assert notes == {"onboarding_owner_assigned": "owner va@northwind.example, "
                                                  "backup va2@northwind.example",
                     "deal_terms_confirmed": "SOW v2, net 30",
                     "scope_and_timeline_captured": "SEO + ads, 3 mo"}


def test_transition_when_artifacts_exist_logs_event(session: Session, playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    add_items(session, playbook, ob_id, stage_items(playbook, "close_confirmation"))
    with session.begin():
        ob = records.advance(session, playbook, ob_id, actor="va", at=LATER)
        assert ob.stage == "intake_completion"
        assert ob.next_action and ob.next_action.startswith("Required docs and access requested")
    with session.begin():
        kinds = session.execute(text("SELECT kind FROM events ORDER BY id")).scalars().all()
    assert kinds[-1] == "stage_transition"


def test_setup_needs_a_passed_qa(session: Session, playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    _walk_to(session, playbook, ob_id, "setup_execution")
    add_items(session, playbook, ob_id, stage_items(playbook, "setup_execution"))
    _refused(session, lambda: records.advance(session, playbook, ob_id, actor="va"),
             "no QA check recorded")
    with session.begin():
        records.record_qa(session, ob_id, passed=False, reason="wrong CRM fields", by="qa",
                          at=LATER)
    _refused(session, lambda: records.advance(session, playbook, ob_id, actor="va"),
             r"latest QA check failed \(wrong CRM fields\)")


def test_no_handoff_with_open_critical_blocker(session: Session, playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    _walk_to(session, playbook, ob_id, "ready_to_deliver")
    add_items(session, playbook, ob_id, stage_items(playbook, "ready_to_deliver"))
    with session.begin():
        blocker = records.open_blocker(session, playbook, ob_id, "missing_access", critical=True,
                                       note="no DNS access", by="va", at=LATER)
        blocker_id = blocker.id
    _refused(session, lambda: records.advance(session, playbook, ob_id, actor="va"),
             rf"critical blocker open \(#{blocker_id} missing_access\)")
    with session.begin():
        records.resolve_blocker(session, playbook, blocker_id, by="va", at=LATER)
    with session.begin():
        ob = records.advance(session, playbook, ob_id, actor="va", at=LATER)
        assert ob.status == "ready" and ob.ready_at == LATER


def test_no_handoff_without_qa_pass_after_a_failure(session: Session, playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    _walk_to(session, playbook, ob_id, "ready_to_deliver")
    add_items(session, playbook, ob_id, stage_items(playbook, "ready_to_deliver"))
    with session.begin():
        records.record_qa(session, ob_id, passed=False, reason="packet lacks exclusions",
                          by="qa", at=LATER + dt.timedelta(minutes=5))
    _refused(session, lambda: records.advance(session, playbook, ob_id, actor="va"),
             "latest QA check failed")


def test_sla_exception_needs_rationale(session: Session, playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    for reason in (None, "   "):
        _refused(session, lambda r=reason: records.log_sla_exception(
            session, playbook, ob_id, sla_key="welcome", reason=r, by="va", at=LATER),
            "needs a logged rationale")
    with session.begin():
        row = records.log_sla_exception(session, playbook, ob_id, sla_key="welcome",
                                        reason="client asked us to wait", by="va", at=LATER)
        assert row.id


def test_founder_boundary_needs_the_founder(session: Session, playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    _refused(session, lambda: records.record_founder_decision(
        session, playbook, boundary="contract_pricing_change", decision="10% discount",
        decided_by="va@northwind.example", onboarding_id=ob_id, at=LATER),
        "contract_pricing_change is a founder decision; va@northwind.example cannot decide it")
    with session.begin():
        records.record_founder_decision(
            session, playbook, boundary="contract_pricing_change", decision="10% discount",
            decided_by=playbook.business.founder.email, onboarding_id=ob_id, at=LATER)
    with session.begin():
        actor = session.execute(text(
            "SELECT actor FROM events WHERE kind = 'founder_decision'")).scalar_one()
    assert actor == playbook.business.founder.email


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, p, i: records.record_artifact(s, p, i, "signed_sow", by="va", at=LATER),
         "unknown artifact 'signed_sow'"),
        (lambda s, p, i: records.record_artifact(s, p, 999, "deal_terms_confirmed", by="va",
                                                 at=LATER), "onboarding 999 does not exist"),
        (lambda s, p, i: records.open_blocker(s, p, i, "weather", critical=False, note=None,
                                              by="va", at=LATER), "--type 'weather' is not known"),
        (lambda s, p, i: records.resolve_blocker(s, p, 4242, by="va", at=LATER),
         "blocker 4242 does not exist"),
        (lambda s, p, i: records.record_qa(s, i, passed=False, reason=None, by="qa", at=LATER),
         "--reason is required when QA fails"),
        (lambda s, p, i: records.log_interruption(s, p, category="gossip", avoidable=True,
                                                  onboarding_id=None, lane=None, note=None,
                                                  at=LATER, by="f"),
         "--category 'gossip' is not known"),
        (lambda s, p, i: records.close_action(s, 77, note="done", by="f", at=LATER),
         "corrective action 77 does not exist"),
        (lambda s, p, i: records.record_artifact(s, p, i, "deal_terms_confirmed", by="va",
                                                 at=LATER, note="a\x00b"),
         "contains control characters"),
    ],
)
def test_bad_requests_write_nothing(session: Session, playbook: Playbook, call, message) -> None:  # type: ignore[no-untyped-def]
    ob_id = new_onboarding(session, playbook)
    _refused(session, lambda: call(session, playbook, ob_id), message)


def test_recording_an_artifact_twice_keeps_the_first(session: Session, playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    add_items(session, playbook, ob_id, ["deal_terms_confirmed"], at=CLOSED)
    with session.begin():
        artifact, created = records.record_artifact(
            session, playbook, ob_id, "deal_terms_confirmed", by="other", at=LATER)
        assert not created and artifact.recorded_at == CLOSED


def test_event_log_is_append_only(session: Session, playbook: Playbook) -> None:
    new_onboarding(session, playbook)
    for statement in ("UPDATE events SET actor = 'mallory'", "DELETE FROM events"):
        with pytest.raises(DBAPIError, match="append-only"):
            with session.begin():
                session.execute(text(statement))


def test_resolving_twice_is_refused(session: Session, playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    with session.begin():
        blocker_id = records.open_blocker(session, playbook, ob_id, "approval_delay",
                                          critical=False, note=None, by="va", at=LATER).id
    with session.begin():
        records.resolve_blocker(session, playbook, blocker_id, by="va", at=LATER)
    _refused(session, lambda: records.resolve_blocker(session, playbook, blocker_id, by="va",
                                                      at=LATER), "already resolved")


def test_unknown_onboarding_is_not_found(session: Session, playbook: Playbook) -> None:
    with pytest.raises(NotFoundError, match="onboarding 5 does not exist"):
        with session.begin():
            records.advance(session, playbook, 5, actor="va")


def test_guardrail_error_is_a_handoff_error() -> None:
    assert issubclass(GuardrailError, HandoffError)


def test_stage_transition_requires_expected_stage(session: Session, playbook: Playbook) -> None:
    ob_id = new_onboarding(session, playbook)
    add_items(session, playbook, ob_id, stage_items(playbook, "close_confirmation"))
    _refused(session, lambda: records.advance(session, playbook, ob_id, actor="flow",
                                              expected_stage="intake_completion"),
             "is in close_confirmation, not intake_completion")
    with session.begin():
        assert session.get(Onboarding, ob_id).stage == "close_confirmation"  # type: ignore[union-attr]
