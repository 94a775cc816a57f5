"""The stage-exit rule over every active client at once: the same answers as the per-client
check on a varied history, and reconcile's reads in a fixed number of statements whatever N."""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Onboarding
from db.playbook import Playbook
from tasks.history.generator import generate_history
from tasks.onboarding import records
from tasks.onboarding.exits import active_exit_problems
from tasks.prefect.reconcile import _active
from tests.factories import CLOSED, new_onboarding, stage_items, statements_sent

END = dt.datetime(2026, 11, 2, 13, 0, tzinfo=dt.UTC)


def _vary(session: Session, playbook: Playbook, onboarding_id: int, rng: random.Random,
          at: dt.datetime) -> None:
    """Walk a client some stages ahead and give it a random mix of the facts the rule reads:
    some of its stage's items, QA checks passed and failed (ties in time included), critical
    and minor blockers, some resolved."""
    order = [s.key for s in playbook.stages]
    with session.begin():
        for _ in range(rng.choice([0, 0, 1, 3, 4, 4])):
            ob = records.get_onboarding(session, onboarding_id)
            for key in stage_items(playbook, ob.stage):
                records.record_artifact(session, playbook, onboarding_id, key, by="test", at=at)
            if ob.stage == order[-1]:
                break
            if playbook.stage(ob.stage).gates:
                records.record_qa(session, onboarding_id, passed=True, reason=None, by="test",
                                  at=at)
            records.advance(session, playbook, onboarding_id, actor="test", at=at)
        ob = records.get_onboarding(session, onboarding_id)
        for key in stage_items(playbook, ob.stage):
            if rng.random() < 0.7:
                records.record_artifact(session, playbook, onboarding_id, key, by="test", at=at)
        for _ in range(rng.choice([0, 1, 2, 3])):
            passed = rng.random() < 0.5
            records.record_qa(session, onboarding_id, passed=passed,
                              reason=None if passed else "rework the checklist", by="test",
                              at=at + dt.timedelta(minutes=rng.choice([0, 0, 5])))
        for _ in range(rng.choice([0, 0, 1, 2])):
            blocker = records.open_blocker(
                session, playbook, onboarding_id, rng.choice(sorted(playbook.blockers)),
                critical=rng.random() < 0.6, note=None, by="test", at=at)
            if rng.random() < 0.3:
                session.flush()
                records.resolve_blocker(session, playbook, blocker.id, by="test", at=at)


def _seed(session: Session, playbook: Playbook, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(count):
        _vary(session, playbook, new_onboarding(session, playbook), rng,
              CLOSED + dt.timedelta(hours=1))


def test_the_set_based_check_agrees_with_the_per_client_one(session: Session,
                                                           playbook: Playbook) -> None:
    with session.begin():
        generate_history(session, playbook, n=80, months=3, end=END, seed=5)
    _seed(session, playbook, 60, seed=3)
    with session.begin():
        at_once = active_exit_problems(session, playbook)
        one_by_one = {ob.id: records.exit_problems(session, playbook, ob) for ob in
                      session.scalars(select(Onboarding).where(Onboarding.status == "active"))}
    assert at_once == one_by_one
    seen = " | ".join(p for problems in at_once.values() for p in problems)
    for case in ("missing artifacts", "no QA check recorded", "latest QA check failed",
                 "critical blocker open"):
        assert case in seen, case  # the history exercises every branch of the rule
    assert any(not problems for problems in at_once.values())


def test_reconcile_reads_every_active_client_in_a_fixed_number_of_statements(
        db_url: str, session: Session, playbook: Playbook) -> None:
    _seed(session, playbook, 10, seed=1)
    with statements_sent(db_url) as small:
        ten = _active()
    _seed(session, playbook, 190, seed=2)
    with statements_sent(db_url) as large:
        two_hundred = _active()
    assert (len(ten), len(two_hundred)) == (10, 200)
    assert any(met for _, _, met, _ in two_hundred) and not all(m for _, _, m, _ in two_hundred)
    assert len(large) == len(small), "\n".join(large)
