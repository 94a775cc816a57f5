"""The playbook loads, follows the seed, and a broken one fails naming the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from db.playbook import STAGE_ORDER, PlaybookError, load_playbook

SHIPPED = Path(__file__).resolve().parents[2] / "deployments" / "playbook.yaml"


def _raw() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(SHIPPED.read_text())


def _write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "playbook.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_playbook_follows_the_seed() -> None:
    playbook = load_playbook(SHIPPED)
    assert tuple(s.key for s in playbook.stages) == STAGE_ORDER
    assert set(playbook.blockers) == {"missing_access", "missing_documents", "approval_delay",
                                      "schedule_conflict", "scope_ambiguity",
                                      "internal_dependency_delay"}
    assert set(playbook.lanes) == {"A", "B", "C", "D"}
    assert playbook.slas["welcome"].within == 4
    assert playbook.slas["intake_reminder"].every_min == 24
    assert playbook.slas["intake_reminder"].every_max == 48
    assert playbook.escalations.no_response_after_reminder_cycles == 2
    assert playbook.escalations.critical_dependency_unresolved.after == 48
    assert [s.key for s in playbook.packet_sections] == [
        "client_profile", "scope", "timeline", "risks", "communication", "escalation_contacts"]
    assert "intake_questionnaire_completed" in [i.key for i in
                                                playbook.required_items("intake_completion")]
    assert "delivery_packet_signed_off" in [i.key for i in
                                            playbook.required_items("ready_to_deliver")]


def _set(raw: dict, path: str, value: object) -> None:  # type: ignore[type-arg]
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("calendar.timezone", "Mars/Olympus", "calendar: timezone 'Mars/Olympus' is not an IANA"),
        ("stages.1.artifacts.0.key", KeyError, r"stages\.1\.artifacts\.0\.key: Field required"),
        ("stages.2.lane", "Z", "stages.kickoff_alignment.lane: unknown lane 'Z'"),
        ("slas.welcome.unit", "fortnights", r"slas\.welcome\.unit: Input should be"),
        ("escalations.no_response_after_reminder_cycles", 0,
         r"escalations\.no_response_after_reminder_cycles"),
        ("business.founder.email", "not-an-email", r"business\.founder\.email"),
        ("calendar.hours.end", "08:00", r"calendar\.hours: .*end 08:00:00 must be after start"),
        ("blockers.missing_access.escalation.0.to", "mayor", r"blockers\.missing_access\.escalation"),
        ("stages.3.checklists", ["before_lunch"], "unknown checklist 'before_lunch'"),
        ("surprise", 1, r"surprise: Extra inputs are not permitted"),
    ],
)
def test_broken_playbook_names_the_key(tmp_path: Path, path: str, value: object,
                                       message: str) -> None:
    raw = _raw()
    _set(raw, path, value)
    with pytest.raises(PlaybookError, match=message):
        load_playbook(_write(tmp_path, raw))


def test_missing_stage_is_named(tmp_path: Path) -> None:
    raw = _raw()
    raw["stages"] = [s for s in raw["stages"] if s["key"] != "kickoff_alignment"]
    with pytest.raises(PlaybookError, match="missing kickoff_alignment"):
        load_playbook(_write(tmp_path, raw))


def test_reordered_stages_are_refused(tmp_path: Path) -> None:
    raw = _raw()
    raw["stages"][0], raw["stages"][1] = raw["stages"][1], raw["stages"][0]
    with pytest.raises(PlaybookError, match="stages must be exactly, in order"):
        load_playbook(_write(tmp_path, raw))


def test_duplicate_artifact_key_is_refused(tmp_path: Path) -> None:
    raw = _raw()
    raw["stages"][1]["artifacts"][0]["key"] = "deal_terms_confirmed"
    with pytest.raises(PlaybookError, match="item key 'deal_terms_confirmed' is also used"):
        load_playbook(_write(tmp_path, raw))


@pytest.mark.parametrize("content", ["", "- a\n- b\n", "stages: [\n"])
def test_unreadable_playbook(tmp_path: Path, content: str) -> None:
    path = tmp_path / "playbook.yaml"
    path.write_text(content)
    with pytest.raises(PlaybookError, match=str(path)):
        load_playbook(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="does not exist"):
        load_playbook(tmp_path / "nope.yaml")
