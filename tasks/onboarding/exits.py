"""When a client may leave its current stage: one rule, over facts read for one client or for all
active clients in a fixed number of statements (reconcile asks for every client at once).

The rule (`exit_problems_of`) reads only `ExitFacts`; `exit_facts` reads those facts for any set
of onboardings, so the per-client check and the set-based one cannot drift apart.

What a stage requires of a client is fixed when the client enters it (`held_items`): a playbook
edit adds requirements from the next stage entry, removes them at once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from db.models import Artifact, Blocker, Onboarding, QaReview
from db.playbook import Gate, Playbook
from db.playbook.parts import Item


@dataclass
class ExitFacts:
    """What the exit rule reads of one client."""

    have: set[str] = field(default_factory=set)  # artifact and checklist keys recorded
    qa: tuple[bool, str | None] | None = None  # the latest QA check: (passed, reason)
    critical: list[tuple[int, str]] = field(default_factory=list)  # open critical (id, type)


def held_items(playbook: Playbook, stage_key: str,
               entered_with: Collection[str] | None) -> list[Item]:
    """The items a client in `stage_key` must have to leave it: those the stage required when
    the client entered it (`entered_with`, the onboarding's `stage_items`; None for a record
    from before they were kept) that the playbook in force still requires. An item added since
    applies from the next stage entry (or now, by `handoff playbook apply --apply-now`); an
    item removed holds nobody back from the moment it is gone."""
    items = playbook.required_items(stage_key)
    return items if entered_with is None else [i for i in items if i.key in entered_with]


def missing_of(playbook: Playbook, stage_key: str, have: set[str],
               entered_with: Collection[str] | None = None) -> list[str]:
    """Items the stage holds the client to that are not in `have`, in playbook order."""
    return [i.key for i in held_items(playbook, stage_key, entered_with) if i.key not in have]


def exit_problems_of(playbook: Playbook, stage_key: str, facts: ExitFacts,
                     entered_with: Collection[str] | None = None) -> list[str]:
    """Why a client with these facts, held to `entered_with` (see `held_items`), may not leave
    `stage_key` yet; empty when it may."""
    problems = []
    missing = missing_of(playbook, stage_key, facts.have, entered_with)
    if missing:
        problems.append(f"missing artifacts {', '.join(missing)}")
    gates = playbook.stage(stage_key).gates
    if Gate.QA_PASSED in gates:
        if facts.qa is None:
            problems.append("no QA check recorded ('handoff qa record ID --pass')")
        elif not facts.qa[0]:
            problems.append(f"latest QA check failed ({facts.qa[1] or 'no reason given'})")
    if Gate.NO_OPEN_CRITICAL_BLOCKER in gates and facts.critical:
        ids = ", ".join(f"#{blocker_id} {kind}" for blocker_id, kind in facts.critical)
        problems.append(f"critical blocker open ({ids})")
    return problems


def exit_facts(session: Session, playbook: Playbook, scope: Select[tuple[int]],
               stages: Iterable[str] | None = None) -> dict[int, ExitFacts]:
    """ExitFacts of the onboardings `scope` selects (a select of Onboarding.id), in at most
    three statements whatever their number. `stages`, when known, are the only stages they can
    be in: a gate none of them has is not read."""
    keys = {s.key for s in playbook.stages} if stages is None else set(stages)
    facts: dict[int, ExitFacts] = {}
    # Plain column rows through the session's connection: the ORM's entity loading adds
    # nothing to tuples and cost 2-3x the reads themselves at thousands of clients. The
    # connection does not autoflush as the session does: flush what this session wrote first.
    session.flush()
    connection = session.connection()
    # The largest read (every artifact of every client): its rows straight from the driver's
    # cursor, two plain columns that need no conversion.
    artifacts = connection.execute(
        select(Artifact.onboarding_id, Artifact.key).where(Artifact.onboarding_id.in_(scope)))
    for onboarding_id, key in artifacts.cursor.fetchall():
        client = facts.get(onboarding_id)
        if client is None:
            client = facts[onboarding_id] = ExitFacts()
        client.have.add(key)
    artifacts.close()
    qa_gated = [k for k in keys if Gate.QA_PASSED in playbook.stage(k).gates]
    if qa_gated:
        # Oldest first, so each client's latest check (ties in time: the later id) comes last.
        for onboarding_id, passed, reason in connection.execute(
                select(QaReview.onboarding_id, QaReview.passed, QaReview.reason)
                .where(QaReview.onboarding_id.in_(scope.where(Onboarding.stage.in_(qa_gated))))
                .order_by(QaReview.at, QaReview.id)):
            facts.setdefault(onboarding_id, ExitFacts()).qa = (passed, reason)
    blocker_gated = [k for k in keys if Gate.NO_OPEN_CRITICAL_BLOCKER in playbook.stage(k).gates]
    if blocker_gated:
        for onboarding_id, blocker_id, kind in connection.execute(
                select(Blocker.onboarding_id, Blocker.id, Blocker.type)
                .where(Blocker.onboarding_id.in_(scope.where(Onboarding.stage.in_(blocker_gated))),
                       Blocker.resolved_at.is_(None), Blocker.critical.is_(True))
                .order_by(Blocker.opened_at, Blocker.id)):
            facts.setdefault(onboarding_id, ExitFacts()).critical.append((blocker_id, kind))
    return facts


def active_exit_problems(session: Session, playbook: Playbook,
                         active: Iterable[tuple[int, str, list[str] | None]] | None = None
                         ) -> dict[int, list[str]]:
    """Every active onboarding's exit problems (empty: it may leave its stage), in a fixed
    number of statements whatever the number of clients. `active`: their (id, stage,
    stage_items) rows, when the caller has read them already."""
    if active is None:
        active = list(session.connection().execute(
            select(Onboarding.id, Onboarding.stage, Onboarding.stage_items)
            .where(Onboarding.status == "active")).tuples())
    facts = exit_facts(session, playbook,
                       select(Onboarding.id).where(Onboarding.status == "active"))
    return {onboarding_id: exit_problems_of(playbook, stage, facts.get(onboarding_id, ExitFacts()),
                                            entered_with)
            for onboarding_id, stage, entered_with in active}
