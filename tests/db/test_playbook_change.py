"""A playbook edit with clients in flight: the stage a client is in keeps what it required on
entry (a new item holds it from its next stage entry, or at once with `playbook apply
--apply-now`; a removed item holds nobody back), and `playbook check` counts whom an edit
concerns, from clients built here."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from db.models import Event, Onboarding
from db.playbook import Playbook, load_playbook
from deployments.cli import app
from tasks.comms.context import context
from tasks.comms.snapshot import Client
from tasks.mail.outbox import Draft, enqueue
from tasks.onboarding import records
from tasks.onboarding.exits import active_exit_problems
from tasks.onboarding.playbook_change import playbook_change
from tests.factories import CLOSED, add_items, new_onboarding, snapshot, stage_items

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((ROOT / "deployments" / "playbook.yaml").read_text())
SOW = {"key": "signed_sow", "label": "Signed statement of work on file", "lane": "A"}
SIGN_OFF = {"key": "setup_signed_off", "label": "Setup signed off by the lead", "lane": "B"}


def edited(tmp_path: Path, *edits: Callable[[dict[str, Any]], None],
           name: str = "candidate.yaml") -> Path:
    """The shipped playbook with these edits, written to a file."""
    raw = copy.deepcopy(SHIPPED)
    for edit in edits:
        edit(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def stage(raw: dict[str, Any], key: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in raw["stages"] if s["key"] == key)
    return found


def add_item(key: str, item: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda raw: stage(raw, key)["artifacts"].append(dict(item))


def drop_item(key: str, item_key: str) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        stage(raw, key)["artifacts"] = [a for a in stage(raw, key)["artifacts"]
                                        if a["key"] != item_key]
    return edit


def bump(raw: dict[str, Any]) -> None:
    raw["version"] = "2026.12.1"


def walk_to(session: Session, playbook: Playbook, onboarding_id: int, target: str) -> None:
    """Record each earlier stage's items and leave it, at the close, until `target`."""
    while True:
        with session.begin():
            current = records.get_onboarding(session, onboarding_id).stage
        if current == target:
            return
        add_items(session, playbook, onboarding_id, stage_items(playbook, current))
        with session.begin():
            pass_qa(session, playbook, onboarding_id, current)
            records.advance(session, playbook, onboarding_id, actor="test", at=CLOSED)


def pass_qa(session: Session, playbook: Playbook, onboarding_id: int, stage_key: str) -> None:
    """A passed QA check, where the stage has a QA gate."""
    if playbook.stage(stage_key).gates:
        records.record_qa(session, onboarding_id, passed=True, reason=None, by="test", at=CLOSED)


def problems(session: Session, playbook: Playbook, onboarding_id: int) -> list[str]:
    """The per-client exit check, asserted equal to reconcile's set-based one."""
    with session.begin():
        one = records.exit_problems(session, playbook,
                                    records.get_onboarding(session, onboarding_id))
        assert active_exit_problems(session, playbook)[onboarding_id] == one
        return one


def test_a_new_item_holds_a_client_from_its_next_stage_entry(
        session: Session, playbook: Playbook, tmp_path: Path) -> None:
    client = new_onboarding(session, playbook)
    walk_to(session, playbook, client, "kickoff_alignment")
    old_kickoff = stage_items(playbook, "kickoff_alignment")
    new = load_playbook(edited(tmp_path, bump, add_item("kickoff_alignment", SOW),
                               add_item("setup_execution", SIGN_OFF)))
    add_items(session, new, client, old_kickoff)
    assert problems(session, new, client) == []  # signed_sow came after the client entered
    with session.begin():
        records.advance(session, new, client, actor="test", at=CLOSED)
    add_items(session, new, client, stage_items(playbook, "setup_execution"))
    with session.begin():
        pass_qa(session, new, client, "setup_execution")
    assert problems(session, new, client) == ["missing artifacts setup_signed_off"]
    with session.begin():
        ob = records.get_onboarding(session, client)
        assert (ob.playbook_version, ob.stage_playbook_version) == ("2026.11.1", "2026.12.1")
        entered = session.scalars(select(Event.detail).where(
            Event.onboarding_id == client, Event.kind == "stage_transition")
            .order_by(Event.id.desc())).first()
        assert entered is not None and "setup_signed_off" in entered["required"]


def test_a_removed_item_holds_nobody_back_at_once(
        session: Session, playbook: Playbook, tmp_path: Path) -> None:
    client = new_onboarding(session, playbook)
    walk_to(session, playbook, client, "kickoff_alignment")
    add_items(session, playbook, client, ["kickoff_call_held", "responsibilities_clarified"])
    assert problems(session, playbook, client) == [
        "missing artifacts communication_cadence_set"]
    new = load_playbook(edited(tmp_path, drop_item("kickoff_alignment",
                                                   "communication_cadence_set")))
    assert problems(session, new, client) == []


def test_apply_now_holds_clients_already_in_the_stage(
        session: Session, playbook: Playbook, tmp_path: Path) -> None:
    in_kickoff, in_intake = new_onboarding(session, playbook), new_onboarding(session, playbook)
    walk_to(session, playbook, in_kickoff, "kickoff_alignment")
    walk_to(session, playbook, in_intake, "intake_completion")
    new = load_playbook(edited(tmp_path, bump, add_item("kickoff_alignment", SOW)))
    with session.begin():
        active, changed = records.apply_playbook(session, new, actor="va", at=CLOSED)
    assert (active, changed) == (2, {})
    assert "signed_sow" not in " ".join(problems(session, new, in_kickoff))
    with session.begin():
        active, changed = records.apply_playbook(session, new, actor="va", at=CLOSED, now=True)
    assert (active, changed) == (2, {in_kickoff: ["signed_sow"], in_intake: []})
    assert "signed_sow" in " ".join(problems(session, new, in_kickoff))
    with session.begin():
        ob = records.get_onboarding(session, in_kickoff)
        assert (ob.playbook_version, ob.stage_playbook_version) == ("2026.11.1", "2026.12.1")
        assert ob.next_action == "Kickoff call held (4 open in Kickoff alignment)"  # 3 + SOW
        applied = session.scalars(select(Event.detail).where(
            Event.onboarding_id == in_kickoff, Event.kind == "stage_requirements_applied")).all()
        assert [(d["added"], d["from_version"]) for d in applied] == [
            (["signed_sow"], "2026.11.1")]


def _queue_welcome(session: Session, playbook: Playbook, onboarding_id: int) -> None:
    with session.begin():
        ob = records.get_onboarding(session, onboarding_id)
        enqueue(session, playbook, Draft(
            onboarding_id=onboarding_id, template="welcome",
            recipients=ob.contacts, key=f"test-welcome-{onboarding_id}",
            context=context(playbook, Client(row=ob))), now=CLOSED)


def test_check_counts_the_clients_an_edit_concerns(
        session: Session, playbook: Playbook, tmp_path: Path) -> None:
    # Two clients in kickoff (one already has the new item), one in intake, one in setup with
    # a welcome still queued, one ready: not in flight.
    candidate_edits = (
        add_item("kickoff_alignment", SOW),
        drop_item("kickoff_alignment", "communication_cadence_set"),
        lambda raw: stage(raw, "intake_completion")["sla"].update(within=4),
        lambda raw: stage(raw, "close_confirmation").update(on_enter=[]),
        lambda raw: raw["slas"].pop("welcome"))
    candidate = load_playbook(edited(tmp_path, *candidate_edits))
    kickoff = [new_onboarding(session, playbook) for _ in range(2)]
    intake, setup, ready = (new_onboarding(session, playbook) for _ in range(3))
    for client in kickoff:
        walk_to(session, playbook, client, "kickoff_alignment")
    add_items(session, candidate, kickoff[0], ["signed_sow"])
    add_items(session, playbook, kickoff[0], ["communication_cadence_set"])
    walk_to(session, playbook, intake, "intake_completion")
    walk_to(session, playbook, setup, "setup_execution")
    _queue_welcome(session, playbook, setup)
    walk_to(session, playbook, ready, "ready_to_deliver")
    add_items(session, playbook, ready, stage_items(playbook, "ready_to_deliver"))
    with session.begin():
        pass_qa(session, playbook, ready, "ready_to_deliver")
        records.advance(session, playbook, ready, actor="test", at=CLOSED)

    with session.begin():
        change = playbook_change(session, playbook, candidate)
    assert change["active_clients"] == 4
    assert change["version"] == {"from": "2026.11.1", "to": "2026.11.1",
                                 "content_changed": True, "not_bumped": True}
    assert [(i["change"], i["key"], i["in_stage_missing"], i["earlier_missing"])
            for i in change["items"]] == [("added", "signed_sow", 1, 1),
                                          ("removed", "communication_cadence_set", 1, 1)]
    assert change["templates_removed"] == [{"template": "welcome", "unsent": 1}]
    # intake entered Mon 23 Nov 10:00 New York: 5 business days end Tue 1 Dec (Thanksgiving is
    # a holiday), 4 end Mon 30 Nov: one day earlier.
    assert [(s["stage"], s["clients"], s["moved"], s["earliest_shift_hours"],
             s["latest_shift_hours"]) for s in change["stage_slas"]] == [
        ("intake_completion", 1, 1, -24.0, -24.0)]
    assert [(m["sla"], m["to"], m["unsent"]) for m in change["message_slas"]] == [
        ("welcome", None, 1)]
    assert change["calendar"] is None

    before = snapshot(session)
    shown = CliRunner().invoke(app, ["playbook", "check",
                                     str(edited(tmp_path, *candidate_edits, bump))])
    assert shown.exit_code == 0, shown.output
    assert "+ Kickoff alignment: signed_sow" in shown.output
    assert "1 client in this stage lack it" in shown.output
    assert "WARNING" not in shown.output
    as_json = CliRunner().invoke(app, ["playbook", "check", "--json",
                                       str(edited(tmp_path, *candidate_edits))])
    assert json.loads(as_json.output)["version"]["not_bumped"] is True
    bad = edited(tmp_path, add_item("kickoff_alignment", {**SOW, "lane": "Z"}), name="bad.yaml")
    refused = CliRunner().invoke(app, ["playbook", "check", str(bad)])
    assert refused.exit_code == 2
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: invalid playbook {bad}: ")
    assert "stages.kickoff_alignment.artifacts: unknown lane 'Z'" in lines[0]
    assert snapshot(session) == before
    with session.begin():
        assert session.scalar(select(Onboarding.stage_items).where(
            Onboarding.id == kickoff[1])) == stage_items(playbook, "kickoff_alignment")


def test_check_of_the_file_in_force_changes_nothing(session: Session, playbook: Playbook) -> None:
    new_onboarding(session, playbook)
    with session.begin():
        change = playbook_change(session, playbook, playbook)
    assert change["version"]["content_changed"] is False
    assert (change["items"], change["stage_slas"], change["message_slas"],
            change["templates_removed"]) == ([], [], [], [])


def test_a_client_from_before_entries_were_recorded_is_held_to_the_file_in_force(
        session: Session, playbook: Playbook, tmp_path: Path) -> None:
    legacy, recorded = new_onboarding(session, playbook), new_onboarding(session, playbook)
    for client in (legacy, recorded):
        walk_to(session, playbook, client, "kickoff_alignment")
        add_items(session, playbook, client, stage_items(playbook, "kickoff_alignment"))
    with session.begin():  # as `handoff db upgrade` leaves a row older than the column
        session.execute(update(Onboarding).where(Onboarding.id == legacy)
                        .values(stage_items=None, stage_playbook_version=None))
    new = load_playbook(edited(tmp_path, add_item("kickoff_alignment", SOW)))
    with session.begin():
        change = playbook_change(session, playbook, new)
    assert [(i["in_stage_missing"], i["in_stage_unrecorded"]) for i in change["items"]] == [(2, 1)]
    assert problems(session, new, legacy) == ["missing artifacts signed_sow"]
    assert problems(session, new, recorded) == []
