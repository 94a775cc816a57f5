"""The risk register over a seeded history, on SQLite and PostgreSQL.

The history is built below through the service layer, and every client is there to fire one
category, or to come close and not fire (the comment on each says which). The sweep runs at
Wed 2026-12-02 11:00 New York time; Thanksgiving (Thu 11-26) is closed, so the business days after
Mon 11-23 are 24, 25, 27, 30, 12-01, 12-02. The owner of lanes A, B and C (va@) is away, so their
risks go to the backup (va2@); lane D's owner (ops@) is in.

Playbook key -> the test that changes it and sees a different result: the `variants` of
test_each_risk_key_changes_what_opens (quoted), the risks it opens at its end (owner_lane,
mitigation, review_every), or the test named:

    risks                               "risks: {}" (nothing opens)
    risks.<category>                    "without handoff_quality"
    risks.<category>.label              test_risk_views.py::test_the_packet_and_status_list_
                                        open_risks_by_label
    risks.<category>.owner_lane         owner_lane D: lane D's owner, not lane A's backup
    risks.<category>.mitigation         mitigation "Phone them"
    risks.<category>.review_every       review_every 10: next review a week later; also
                                        test_risk_views.py::test_the_weekly_review_lists_the_
                                        reviews_due_by_owner (not due this week)
    risks.<category>.trigger.rule       "trigger rule qa_failed -> kickoff_late"
    trigger intake_incomplete.after     "after 10"
    trigger intake_incomplete.unit      "unit clock_hours"
    trigger scope_unsettled.blockers    "blockers []"
    trigger scope_unsettled.decisions   "decisions []"
    trigger qa_failed.failures          "failures 2"
    trigger message_trouble.statuses    "statuses [bounced]"
    trigger message_trouble.followups   "followups 3"
    (kickoff_late has no parameters)
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Communication, Event, Risk
from db.playbook import Playbook, PlaybookError, load_playbook
from db.session import session_factory
from db.settings import get_settings
from tasks.comms.snapshot import load_snapshot
from tasks.comms.sweeps import queue_due, run_sweep
from tasks.mail.delivery import deliver
from tasks.onboarding import records
from tasks.risks.facts import load_risk_facts
from tasks.risks.register import close_risk, insert_risk, open_risk
from tasks.risks.triggers import due_risks
from tests.factories import CLOSED, add_items, new_onboarding, stage_items, statements_sent
from tests.smtp_server import LoopbackSmtp

AS_OF = dt.datetime(2026, 12, 2, 16, 0, tzinfo=dt.UTC)  # Wed 11:00 New York
AWAY = "va@northwind.example"  # owner of lanes A, B, C
BACKUP = "va2@northwind.example"  # their backup in lanes A and C
LANE_D_OWNER = "ops@northwind.example"


def hours(n: float) -> dt.timedelta:
    return dt.timedelta(hours=n)


def _advance(session: Session, playbook: Playbook, ob_id: int, stage: str,
             at: dt.datetime) -> None:
    add_items(session, playbook, ob_id, stage_items(playbook, stage), at=at)
    with session.begin():
        records.advance(session, playbook, ob_id, actor="test", at=at)


def seed_history(session: Session, factory: sessionmaker[Session], playbook: Playbook,
                 smtp: LoopbackSmtp) -> tuple[dict[str, int], dict[str, set[str]]]:
    """The clients by name, and the categories each must open (derived from how it was built)."""
    ids: dict[str, int] = {}
    expected: dict[str, set[str]] = {}

    def client(name: str, categories: set[str], **overrides: Any) -> int:
        ids[name] = new_onboarding(session, playbook, client=name, **overrides)
        expected[name] = categories
        return ids[name]

    # Intake started Mon 11:00; 3 business days later is Fri 11-27: still missing client items.
    ob = client("Intake Late", {"incomplete_intake"})
    _advance(session, playbook, ob, "close_confirmation", CLOSED + hours(1))
    # Same start, but the client sent everything it owes: nothing to fear.
    ob = client("Intake Complete", set())
    _advance(session, playbook, ob, "close_confirmation", CLOSED + hours(1))
    add_items(session, playbook, ob, [i.key for i in playbook.required_items("intake_completion")
                                      if i.from_client], at=CLOSED + hours(2))
    # Intake started Tue 12-01 11:00: 3 business days run to Fri 12-04, after the sweep.
    ob = client("Intake Fresh", set())
    _advance(session, playbook, ob, "close_confirmation", AS_OF - hours(24))
    # In kickoff alignment since Mon 12:00 with no kickoff: 2 business days passed on Wed 11-25.
    ob = client("Kickoff Unscheduled", {"kickoff_delay"})
    _advance(session, playbook, ob, "close_confirmation", CLOSED + hours(1))
    _advance(session, playbook, ob, "intake_completion", CLOSED + hours(2))
    # Kickoff committed by Fri 11-27 and never held: the window ended before the sweep.
    client("Kickoff Window Passed", {"kickoff_delay"}, kickoff_by=dt.date(2026, 11, 27))
    # In kickoff alignment with a kickoff inside the committed window (by 12-04).
    ob = client("Kickoff On Time", set())
    _advance(session, playbook, ob, "close_confirmation", CLOSED + hours(1))
    _advance(session, playbook, ob, "intake_completion", CLOSED + hours(2))
    with session.begin():
        records.schedule_kickoff(session, playbook, ob, kickoff_at=AS_OF + hours(24),
                                 by="test", at=CLOSED + hours(3))
    scope, decided, others, rework, passed, twice, once = (
        client("Scope Blocker", {"misaligned_scope"}),
        client("Scope Decision", {"misaligned_scope"}),
        client("Other Blockers", set()),  # another type open; a scope blocker resolved
        client("Rework", {"handoff_quality"}), client("QA Passed", set()),
        client("Follow-ups Twice", {"communication_reliability"}),
        client("Follow-up Once", set()))
    with session.begin():
        records.open_blocker(session, playbook, scope, "scope_ambiguity", critical=False,
                             note="Is the blog in scope?", by="test", at=CLOSED + hours(4))
        records.record_founder_decision(
            session, playbook, boundary="scope_exception", decision="Add the blog, +2 weeks",
            decided_by="founder@northwind.example", onboarding_id=decided, at=CLOSED + hours(5))
        records.open_blocker(session, playbook, others, "missing_access", critical=False,
                             note="CMS", by="test", at=CLOSED + hours(4))
        resolved = records.open_blocker(session, playbook, others, "scope_ambiguity",
                                        critical=False, note="x", by="test",
                                        at=CLOSED + hours(4))
        records.resolve_blocker(session, playbook, resolved.id, by="test",
                                at=CLOSED + hours(6), note="settled")
        records.record_qa(session, rework, passed=False, reason="Missing UTM tags", by="test",
                          at=CLOSED + hours(30))
        records.record_qa(session, passed, passed=True, reason=None, by="test",
                          at=CLOSED + hours(30))
        for n in (1, 2):
            records.log_client_response(session, twice, kind="followup_request", template=None,
                                        note=None, at=CLOSED + hours(24 * n), by="test")
        records.log_client_response(session, once, kind="followup_request", template=None,
                                    note=None, at=CLOSED + hours(24), by="test")
        records.set_owner_away(session, AWAY, until=dt.date(2026, 12, 3), at=AS_OF - hours(30),
                               by="test", tz=playbook.calendar.tz)
    # The welcome to this client is refused for good by the mail server: it failed.
    ob = client("Welcome Refused", {"communication_reliability"})
    with session.begin():
        queue_due(session, playbook, CLOSED + hours(1), escalations=False, onboarding_ids=[ob])
    smtp.fail_next(550, stage="RCPT", text="mailbox unavailable")
    deliver(factory, playbook, get_settings(), now=CLOSED + hours(1), onboarding_id=ob)
    with session.begin():
        assert session.scalar(select(Communication.status).where(
            Communication.onboarding_id == ob, Communication.template == "welcome")) == "failed"
    return ids, expected


def opened(session: Session) -> list[Risk]:
    with session.begin():
        rows = list(session.scalars(select(Risk).order_by(Risk.id)))
        session.expunge_all()
        return rows


def test_a_sweep_opens_the_expected_risks_once_each(
        db_url: str, session: Session, playbook: Playbook, smtp: LoopbackSmtp) -> None:
    factory = session_factory(db_url)
    ids, expected = seed_history(session, factory, playbook, smtp)
    names = {v: k for k, v in ids.items()}

    report = run_sweep(factory, playbook, get_settings(), AS_OF, messages=False)

    risks = opened(session)
    want = Counter(c for categories in expected.values() for c in categories)
    assert Counter(r.category for r in risks) == want == Counter(
        incomplete_intake=1, kickoff_delay=2, misaligned_scope=2, handoff_quality=1,
        communication_reliability=2)
    assert report.opened_risks == len(risks) == 8
    by_client: dict[str, set[str]] = {name: set() for name in ids}
    for r in risks:
        by_client[names[r.onboarding_id or 0]].add(r.category)
    assert by_client == expected
    owners = {r.category: r.owner_email for r in risks}
    assert owners == {"incomplete_intake": BACKUP, "kickoff_delay": BACKUP,
                      "misaligned_scope": BACKUP, "communication_reliability": BACKUP,
                      "handoff_quality": LANE_D_OWNER}
    quality = next(r for r in risks if r.category == "handoff_quality")
    assert quality.mitigation == playbook.risks["handoff_quality"].mitigation
    assert "1 failed QA check" in quality.trigger
    # Review every 2 business days from Wed 11:00 (Thu, Fri): Fri 12-04 11:00 New York.
    assert quality.next_review_at == dt.datetime(2026, 12, 4, 16, 0, tzinfo=dt.UTC)
    with session.begin():
        assert session.scalar(select(func.count()).select_from(Event).where(
            Event.kind == "risk_opened")) == 8

    # Again at the same instant, and an hour later: nothing opens twice.
    for at in (AS_OF, AS_OF + hours(1)):
        assert run_sweep(factory, playbook, get_settings(), at, messages=False).opened_risks == 0
    assert len(opened(session)) == 8

    # Closed by hand: the same evidence does not reopen it; new evidence (a second failed QA)
    # does, as a new risk.
    with session.begin():
        close_risk(session, quality.id, note="Reworked and re-checked", by="ops",
                   at=AS_OF + hours(2))
    assert run_sweep(factory, playbook, get_settings(), AS_OF + hours(3),
                     messages=False).opened_risks == 0
    with session.begin():
        records.record_qa(session, ids["Rework"], passed=False, reason="Broken form",
                          by="test", at=AS_OF + hours(4))
    assert run_sweep(factory, playbook, get_settings(), AS_OF + hours(5),
                     messages=False).opened_risks == 1
    reopened = opened(session)[-1]
    assert (reopened.category, reopened.onboarding_id, reopened.closed_at) == (
        "handoff_quality", ids["Rework"], None)
    assert "2 failed QA checks" in reopened.trigger


def test_one_open_risk_per_client_and_category_is_the_databases_rule(
        db_url: str, session: Session, playbook: Playbook) -> None:
    """Two writers (two sweeps, a sweep and a person) cannot both open it: the second insert
    is refused by the partial unique index and the call says so."""
    ob = new_onboarding(session, playbook)
    with session.begin():
        first = open_risk(session, playbook, ob, category="kickoff_delay", note="late",
                          by="va", at=CLOSED).id
    with session.begin(), pytest.raises(Exception, match="already has an open kickoff_delay"):
        open_risk(session, playbook, ob, category="kickoff_delay", note="again", by="va",
                  at=CLOSED)
    with session.begin():  # a sweep that loaded its facts before the first risk was opened
        assert insert_risk(session, playbook, onboarding_id=ob, category="kickoff_delay",
                           trigger="t", by="handoff", at=CLOSED, owner="va@northwind.example"
                           ) is None
        assert session.scalar(select(func.count()).select_from(Risk)) == 1  # still usable
    with session.begin():
        session.add(Risk(onboarding_id=ob, category="kickoff_delay", trigger="raw",
                         owner_email="x@y.example", mitigation="m", review_every_days=1,
                         opened_at=CLOSED))
        with pytest.raises(Exception, match="(?i)unique"):
            session.flush()
        session.rollback()
    with session.begin():
        close_risk(session, first, note="kicked off", by="va", at=CLOSED + hours(1))
        assert open_risk(session, playbook, ob, category="kickoff_delay", note="slipped again",
                         by="va", at=CLOSED + hours(2)).id != first


def _with(playbook: Playbook, category: str, **update: Any) -> Playbook:
    return playbook.model_copy(update={"risks": {**playbook.risks, category:
        playbook.risks[category].model_copy(update=update)}})


def _trigger(playbook: Playbook, category: str, **update: Any) -> Playbook:
    old = playbook.risks[category].trigger
    trigger = type(old).model_validate({**old.model_dump(), **update})
    return _with(playbook, category, trigger=trigger)


def test_each_risk_key_changes_what_opens(
        sqlite_url: str, lite: Session, playbook: Playbook, smtp: LoopbackSmtp) -> None:
    """Each variant of the playbook, evaluated over the seeded history, differs from the
    shipped one exactly where its key says (pure rules over one snapshot)."""
    ids, _expected = seed_history(lite, session_factory(sqlite_url), playbook, smtp)
    with lite.begin():
        snapshot = load_snapshot(lite, AS_OF, tz=playbook.calendar.tz)
        facts = load_risk_facts(lite)
    names = {v: k for k, v in ids.items()}

    def fired(book: Playbook) -> set[tuple[str, str]]:
        return {(names[f.onboarding_id], f.category)
                for f in due_risks(book, snapshot, facts, AS_OF)}

    base = fired(playbook)
    assert len(base) == 8
    qa = playbook.risks["handoff_quality"]
    kickoff_rule = playbook.risks["kickoff_delay"].trigger
    variants: dict[str, tuple[Playbook, set[tuple[str, str]], set[tuple[str, str]]]] = {
        # name: (playbook, firings lost, firings gained)
        "risks: {}": (playbook.model_copy(update={"risks": {}}), base, set()),
        "without handoff_quality": (playbook.model_copy(update={"risks": {
            k: v for k, v in playbook.risks.items() if k != "handoff_quality"}}),
            {("Rework", "handoff_quality")}, set()),
        "trigger rule qa_failed -> kickoff_late": (
            _with(playbook, "handoff_quality", trigger=kickoff_rule),
            {("Rework", "handoff_quality")},
            {("Kickoff Unscheduled", "handoff_quality"),
             ("Kickoff Window Passed", "handoff_quality")}),
        "after 10": (_trigger(playbook, "incomplete_intake", after=10),
                     {("Intake Late", "incomplete_intake")}, set()),
        "unit clock_hours": (_trigger(playbook, "incomplete_intake", unit="clock_hours"),
                             set(), {("Intake Fresh", "incomplete_intake")}),
        "blockers []": (_trigger(playbook, "misaligned_scope", blockers=[]),
                        {("Scope Blocker", "misaligned_scope")}, set()),
        "decisions []": (_trigger(playbook, "misaligned_scope", decisions=[]),
                         {("Scope Decision", "misaligned_scope")}, set()),
        "failures 2": (_trigger(playbook, "handoff_quality", failures=2),
                       {("Rework", "handoff_quality")}, set()),
        "statuses [bounced]": (_trigger(playbook, "communication_reliability",
                                        statuses=["bounced"]),
                               {("Welcome Refused", "communication_reliability")}, set()),
        "followups 3": (_trigger(playbook, "communication_reliability", followups=3),
                        {("Follow-ups Twice", "communication_reliability")}, set()),
    }
    for name, (book, lost, gained) in variants.items():
        now = fired(book)
        assert (base - now, now - base) == (lost, gained), name

    # owner_lane, mitigation, review_every: what the opened risk carries.
    ob = ids["QA Passed"]
    with lite.begin():
        plain = open_risk(lite, playbook, ob, category="handoff_quality", note="n", by="t",
                          at=CLOSED)
        changed = open_risk(lite, _with(playbook, "kickoff_delay", owner_lane="D",
                                           mitigation="Phone them", review_every=10),
                            ob, category="kickoff_delay", note="n", by="t", at=CLOSED)
        assert plain.mitigation == qa.mitigation
        # owner_lane D: lane D's owner instead of lane A's (who is away: its backup).
        assert changed.owner_email == LANE_D_OWNER != open_risk(
            lite, playbook, ids["QA Passed"], category="incomplete_intake", note="n",
            by="t", at=CLOSED).owner_email
        assert changed.mitigation == "Phone them"
        assert (changed.next_review_at - plain.next_review_at).days >= 7  # type: ignore[operator]


@pytest.mark.parametrize(("snippet", "replacement", "named"), [
    ("trigger: {rule: kickoff_late}", "trigger: {rule: gut_feeling}", "gut_feeling"),
    ("owner_lane: D\n    mitigation", "owner_lane: Z\n    mitigation", "'Z'"),
    ("blockers: [scope_ambiguity]", "blockers: [scope_creep]", "scope_creep"),
    ("followups: 2}", "followups: 2, retries: 1}", "retries"),
])
def test_an_unknown_trigger_lane_or_parameter_is_refused_naming_it(
        tmp_path: Path, snippet: str, replacement: str, named: str) -> None:
    text = Path("deployments/playbook.yaml").read_text(encoding="utf-8")
    assert snippet in text
    bad = tmp_path / "playbook.yaml"
    bad.write_text(text.replace(snippet, replacement, 1), encoding="utf-8")
    with pytest.raises(PlaybookError, match="risks[.]") as caught:
        load_playbook(bad)
    assert named in str(caught.value)


def test_the_risk_step_reads_in_a_fixed_number_of_statements(
        sqlite_url: str, lite: Session, playbook: Playbook, smtp: LoopbackSmtp) -> None:
    """The sweep's risk evaluation reads the same statements for one history as for three."""
    factory = session_factory(sqlite_url)

    def firings() -> tuple[int, list[str]]:
        with statements_sent(sqlite_url) as sent, lite.begin():
            snapshot = load_snapshot(lite, AS_OF, tz=playbook.calendar.tz)
            found = due_risks(playbook, snapshot, load_risk_facts(lite), AS_OF)
        return len(found), sent

    seed_history(lite, factory, playbook, smtp)
    one, small = firings()
    for _ in range(2):
        seed_history(lite, factory, playbook, smtp)
    three, large = firings()
    assert (one, three) == (8, 24)
    assert len(large) == len(small), "\n".join(large)
