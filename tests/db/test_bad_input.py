"""Property-based bad input: CLI arguments, Prefect UI stage forms, playbook files, CSV imports.

Whatever hypothesis generates, a request either succeeds or is refused with one line naming the
problem, and a refusal writes nothing. Each test reports how many cases it tried (see README).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from db.playbook import PlaybookError, load_playbook
from db.session import session_factory
from db.validation import HandoffError
from tests.factories import new_onboarding, snapshot

ROOT = Path(__file__).resolve().parents[2]
CASES = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])

nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30),
    st.sampled_from(["", " ", "\x00", "a\nb", "a\rb", "\u2028", "<script>alert(1)</script>",
                     "x" * 5000, "Robert'); DROP TABLE onboardings;--", "ümlaut 🎉", "\t",
                     "\u202eemca", "\u200b\u200b", "\u2066x\u2069", "Caf\udce9",
                     "2200-12-31T23:00", "1991-01-01T09:00"]),
)
ids = st.one_of(st.integers(min_value=-5, max_value=10**12).map(str),
                st.sampled_from(["abc", "1.5", "", "0x10", "１", "99999999999999999999",
                                 str(2**63), "-5"]))


def _invoke(args: list[str]) -> Any:
    from deployments.cli import app

    return CliRunner().invoke(app, args)


def _assert_clean_refusal(result: Any) -> None:
    """Success, or one line on stderr naming the problem and exit code 2 (usage errors too)."""
    if result.exit_code == 0:
        return
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def _refused_or_done(session: Session, args: list[str]) -> Any:
    """Run a command: it succeeds, or it is refused cleanly and the database is unchanged."""
    before = snapshot(session)
    result = _invoke(args)
    _assert_clean_refusal(result)
    if result.exit_code != 0:
        assert snapshot(session) == before
    return result


@pytest.fixture
def seeded(sqlite_url: str) -> tuple[Session, int]:
    from db.playbook import get_playbook

    session = session_factory(sqlite_url)()
    return session, new_onboarding(session, get_playbook())


@CASES
@given(onboarding=ids, key=nasty_text, note=nasty_text, when=nasty_text)
def test_artifact_add_arguments(seeded: tuple[Session, int], onboarding: str, key: str,
                                note: str, when: str) -> None:
    session, _ = seeded
    _refused_or_done(session, ["artifact", "add", onboarding, key, "--note", note, "--at", when,
                               "--json"])


@CASES
@given(client=nasty_text, owner=nasty_text, contact=nasty_text, closed=nasty_text,
       kickoff=nasty_text)
def test_onboard_arguments(seeded: tuple[Session, int], client: str, owner: str, contact: str,
                           closed: str, kickoff: str) -> None:
    session, _ = seeded
    _refused_or_done(session, ["onboard", "--client", client, "--segment", "smb", "--offer", "o",
                               "--owner", owner, "--backup", "b@x.example", "--contact",
                               contact, "--closed-at", closed, "--kickoff-by", kickoff,
                               "--no-flow"])


@CASES
@given(blocker_type=nasty_text, category=nasty_text, email=nasty_text, until=nasty_text,
       onboarding=ids)
def test_blocker_interruption_owner_arguments(seeded: tuple[Session, int], blocker_type: str,
                                              category: str, email: str, until: str,
                                              onboarding: str) -> None:
    session, _ = seeded
    for args in (["blocker", "open", onboarding, "--type", blocker_type],
                 ["interruption", "log", "--category", category, "--avoidable"],
                 ["owner", "away", email, "--until", until],
                 ["qa", "record", onboarding, "--fail", "--reason", category]):
        _refused_or_done(session, args)


def _form_values() -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(
        st.sampled_from(["deal_terms_confirmed", "scope_and_timeline_captured", "kickoff_at",
                         "qa_result", "qa_reason", "note", "recorded_by", "bogus",
                         "onboarding_owner_assigned", "tools_assets_workflows_configured"]),
        st.one_of(st.booleans(), nasty_text, st.integers(), st.none()), max_size=6)


@CASES
@given(stage=st.sampled_from(["close_confirmation", "intake_completion", "kickoff_alignment",
                              "setup_execution", "ready_to_deliver"]), values=_form_values())
def test_stage_forms(seeded: tuple[Session, int], stage: str, values: dict[str, Any]) -> None:
    """The UI form either fails the schema (the server refuses the resume) or is applied all or
    nothing by the flow's recording step."""
    import datetime as dt

    from db.playbook import get_playbook
    from tasks.onboarding.steps import _apply_form, stage_form

    session, ob_id = seeded
    try:
        form = stage_form(stage).model_validate(values)
    except ValidationError:
        return  # the Prefect server validates against this same schema and refuses the resume
    before = snapshot(session)
    try:
        with session.begin():
            _apply_form(session, get_playbook(), ob_id, stage, form.model_dump(), by="va",
                        now=dt.datetime.now(dt.UTC))
    except HandoffError as exc:
        assert "\n" not in str(exc)
        assert snapshot(session) == before


SHIPPED = yaml.safe_load((ROOT / "deployments" / "playbook.yaml").read_text())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(SHIPPED)


@settings(max_examples=80, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS),
       value=st.one_of(st.none(), st.integers(-3, 3), nasty_text, st.booleans(),
                       st.lists(st.integers(), max_size=2), st.just("__delete__")))
def test_mutated_playbooks(tmp_path: Path, path: tuple[Any, ...], value: Any) -> None:
    import copy

    raw = copy.deepcopy(SHIPPED)
    node = raw
    for part in path[:-1]:
        node = node[part]
    if value == "__delete__":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    target = tmp_path / "p.yaml"
    target.write_text(yaml.safe_dump(raw))
    try:
        load_playbook(target)
    except PlaybookError as exc:
        message = str(exc)
        assert "\n" not in message and str(target) in message


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(range(5)), duplicate=st.booleans())
def test_stage_cycles_and_reorders_are_refused(tmp_path_factory: pytest.TempPathFactory,
                                               order: list[int], duplicate: bool) -> None:
    import copy

    raw = copy.deepcopy(SHIPPED)
    stages = [raw["stages"][i] for i in order]
    if duplicate:
        stages.append(copy.deepcopy(stages[0]))  # the flow would loop back: a cycle
    raw["stages"] = stages
    target = tmp_path_factory.mktemp("pb") / "p.yaml"
    target.write_text(yaml.safe_dump(raw))
    if list(order) == [0, 1, 2, 3, 4] and not duplicate:
        load_playbook(target)
        return
    with pytest.raises(PlaybookError, match="stages must be exactly, in order"):
        load_playbook(target)


csv_cell = st.one_of(st.text(alphabet=string.printable, max_size=20),
                     st.sampled_from(["va@northwind.example", "2026-11-20T09:30", "2026-12-01",
                                      "a@b.example;c@d.example", "", "\"quoted,comma\""]))


@CASES
@given(rows=st.lists(st.lists(csv_cell, min_size=8, max_size=8), min_size=1, max_size=4))
def test_csv_import_all_or_nothing(seeded: tuple[Session, int], tmp_path_factory:
                                   pytest.TempPathFactory, rows: list[list[str]]) -> None:
    import csv

    session, _ = seeded
    path = tmp_path_factory.mktemp("csv") / "deals.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["client", "segment", "offer", "owner", "backup", "contact",
                         "closed_at", "kickoff_by"])
        writer.writerows(rows)
    before = snapshot(session)
    result = _invoke(["import", str(path), "--no-flow"])
    _assert_clean_refusal(result)
    after = snapshot(session)
    if result.exit_code != 0:
        assert after == before
    else:
        assert after["onboardings"] == before["onboardings"] + len(rows)


# -- the cases an adversarial probe found, each refused in one line with nothing written --------

CLOSE = "2026-11-23T10:00"


def _recent_close() -> str:
    import datetime as dt

    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")


def _onboard(client: str = "Acme", contact: str = "pat@acme.example",
             closed: str | None = None) -> list[str]:
    return ["onboard", "--client", client, "--segment", "smb", "--offer", "o", "--owner",
            "va@x.example", "--backup", "b@x.example", "--contact", contact, "--closed-at",
            closed or _recent_close(), "--no-flow"]


PROBE_CASES = [
    (["status", "99999999999999999999"], "does not exist"),
    (["status", str(2**63)], "does not exist"),
    (["artifact", "add", "-5", "deal_terms_confirmed"], "-5"),
    (["blocker", "resolve", "99999999999999999999"], "does not exist"),
    (["artifact", "add", "{id}", "deal_terms_confirmed", "--at", "2200-12-31T23:00"],
     "in the future"),
    (["artifact", "add", "{id}", "deal_terms_confirmed", "--at", "2026-01-02T09:00"],
     "before Acme Dental's deal closed"),
    (_onboard(closed="2200-06-01"), "in the future"),
    (_onboard(closed="2020-06-01"), "days ago"),
    (_onboard(client="\u202eLatot"), "override"),
    (_onboard(client="\u200b\u200c\u2060"), "only invisible characters"),
    (_onboard(client="Caf\udce9"), "not UTF-8"),
    (["onboard", "--client"], "requires an argument"),
]


@pytest.mark.parametrize(("args", "match"), PROBE_CASES,
                         ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(PROBE_CASES)])
def test_probe_cases_are_refused_in_one_line(seeded: tuple[Session, int], args: list[str],
                                             match: str) -> None:
    session, ob_id = seeded
    args = [a.replace("{id}", str(ob_id)) for a in args]
    result = _refused_or_done(session, args)
    assert result.exit_code == 2, result.output
    assert match in result.stderr, result.stderr


def test_an_idn_address_is_accepted_at_input(seeded: tuple[Session, int]) -> None:
    """Decision: IDN domains are accepted and sent IDNA-encoded (tests/unit/test_mailer.py)."""
    session, _ = seeded
    result = _refused_or_done(session, _onboard(client="Bücher GmbH",
                                                contact="pat@bücher.example"))
    assert result.exit_code == 0, result.output


def test_a_non_utf8_argument_from_a_terminal_is_refused(sqlite_url: str) -> None:
    """The real console script with Latin-1 bytes in argv, as a misconfigured terminal sends."""
    import os
    import subprocess
    import sys

    handoff = Path(sys.executable).with_name("handoff")
    env = {**os.environ, "HANDOFF_DATABASE_URL": sqlite_url,
           "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    args = [os.fsencode(a) for a in _onboard()]
    args[args.index(b"Acme")] = b"Caf\xe9"
    result = subprocess.run([os.fsencode(handoff), *args], capture_output=True, env=env,
                            timeout=120)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: argument 'Caf") and "is not UTF-8 text" in lines[0]


def test_a_nul_byte_in_a_csv_field_refuses_the_file(seeded: tuple[Session, int],
                                                    tmp_path: Path) -> None:
    session, _ = seeded
    path = tmp_path / "deals.csv"
    path.write_bytes(b"client,segment,offer,owner,backup,contact,closed_at\n"
                     b"Bad\x00Client,smb,o,va@x.example,b@x.example,p@x.example,"
                     + _recent_close().encode() + b"\n")
    result = _refused_or_done(session, ["import", str(path), "--no-flow"])
    assert result.exit_code == 2
    assert "deals.csv line 2: control character '\\x00'" in result.stderr


@pytest.mark.parametrize("shape", ["deep", "alias", "huge"])
def test_a_hostile_playbook_is_refused_before_it_is_built(tmp_path: Path, shape: str) -> None:
    target = tmp_path / "p.yaml"
    if shape == "deep":
        target.write_text("version: " + "[" * 100_000 + "]" * 100_000 + "\n")
    elif shape == "alias":
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
        target.write_text("\n".join(lines) + "\n")
    else:
        target.write_text("version: '" + "x" * (2 * 2**20) + "'\n")
    with pytest.raises(PlaybookError) as refused:
        load_playbook(target)
    assert "\n" not in str(refused.value) and str(target) in str(refused.value)
