"""Every message key is built by tasks.comms.keys: the history generator, the sweeps and the flow
call the same functions, so a demo client's history and its live run agree on what was sent."""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Communication, Onboarding
from db.playbook import Playbook
from tasks.comms import keys
from tasks.comms.sweeps import queue_due
from tasks.history.generator import generate_history

ROOT = Path(__file__).resolve().parents[2]
END = dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC)
BUILDERS = {name: fn for name, fn in inspect.getmembers(keys, inspect.isfunction)
            if fn.__module__ == keys.__name__}


def _recording(built: dict[str, str], name: str, fn: Callable[..., str]) -> Callable[..., str]:
    def build(*args: Any, **kwargs: Any) -> str:
        key = fn(*args, **kwargs)
        built[key] = name
        return key
    return build


def test_history_and_sweeps_take_every_key_from_the_keys_module(
        session: Session, playbook: Playbook, monkeypatch: pytest.MonkeyPatch) -> None:
    built: dict[str, str] = {}
    for name, fn in BUILDERS.items():
        monkeypatch.setattr(keys, name, _recording(built, name, fn))
    with session.begin():
        generate_history(session, playbook, n=80, months=3, end=END, seed=7)
    with session.begin():
        queue_due(session, playbook, END + dt.timedelta(hours=1))
    stored = session.scalars(select(Communication.idempotency_key)).all()
    assert stored
    unbuilt = sorted(set(stored) - set(built))
    assert not unbuilt, f"keys not built by tasks.comms.keys: {unbuilt[:5]}"
    used = {built[k] for k in stored}
    # The history writes what a client saw at every stage; the sweep adds what is due now.
    assert {"stage_message", "missing_info_reminder", "kickoff_confirmation",
            "kickoff_recap", "setup_progress_update", "blocker_escalation"} <= used, used
    staged = {k.split(":")[0] for k in stored if built[k] == "stage_message"}
    assert {"welcome", "intake_request", "handoff_packet", "ready_to_deliver"} <= staged


SAMPLE = {int: 1, str: "x", dt.datetime: dt.datetime(2026, 1, 5, 15, 0, tzinfo=dt.UTC)}


def _prefix(fn: Callable[..., str]) -> str:
    """What a builder's keys start with: 'welcome' for welcome:12."""
    params = inspect.signature(fn, eval_str=True).parameters.values()
    return re.split(r"[:>]", fn(*[SAMPLE[p.annotation] for p in params]))[0]


def test_no_module_builds_a_message_key_by_hand() -> None:
    """A key literal outside keys.py is a second copy of a rule, bound to drift."""
    catalog = yaml.safe_load((ROOT / "templates" / "catalog.yaml").read_text())
    prefixes = {_prefix(fn) for name, fn in BUILDERS.items()
                if name not in ("kickoff_stamp", "alert_copy")} | set(catalog)
    assert {"welcome", "handoff_packet", "esc", "memo"} <= prefixes
    literal = re.compile(r'f"(' + "|".join(map(re.escape, sorted(prefixes))) + r'):\{')
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for folder in ("tasks", "flows", "deployments")
                 for path in sorted((ROOT / folder).rglob("*.py"))
                 if path != ROOT / "tasks" / "comms" / "keys.py"
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if literal.search(line)]
    assert not offenders, offenders


FLOW_SIDE = ("tasks/comms/cadences.py", "tasks/comms/escalations.py", "tasks/onboarding/steps.py")


STAGE_TEMPLATES = sorted({t for stage in yaml.safe_load(
    (ROOT / "deployments" / "playbook.yaml").read_text())["stages"]
    for t in stage.get("on_enter", []) + stage.get("on_exit", [])})


def _templates(template: ast.expr, key: ast.Call) -> list[str]:
    """The templates a message call may send: a literal; PACKET; an SLA's template (the cadences
    send `sla.template`, the SLA named after its key builder); or, for a stage message sent from
    the playbook's on_enter/on_exit list, every template the shipped playbook lists there."""
    assert isinstance(key.func, ast.Attribute)
    if isinstance(template, ast.Constant):
        return [str(template.value)]
    if isinstance(template, ast.Name) and template.id == "PACKET":
        return ["handoff_packet"]
    if isinstance(template, ast.Attribute) and template.attr == "template":
        return [key.func.attr]
    if key.func.attr == "stage_message":
        return STAGE_TEMPLATES
    return []


def _builders_by_template(paths: list[Path]) -> dict[str, set[str]]:
    """template -> the keys.* builders whose keys its messages carry, read from the code.

    A message is `self.message("welcome", keys.stage_message("welcome", ...))` in the history,
    and `draft(sla.template, keys.kickoff_recap(...))` or `Draft(template=name, key=...)` in the
    flow; a key held in a local first (`key = keys.stage_message(...)`) is followed to its call."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef):
                continue
            local = {target.id: node.value for node in ast.walk(function)
                     if isinstance(node, ast.Assign) for target in node.targets
                     if isinstance(target, ast.Name)}
            for call in ast.walk(function):
                if not isinstance(call, ast.Call):
                    continue
                named = {k.arg: k.value for k in call.keywords}
                if "template" in named and "key" in named:
                    template, key = named["template"], named["key"]
                elif len(call.args) >= 2 and isinstance(call.func, (ast.Name, ast.Attribute)) \
                        and getattr(call.func, "attr", getattr(call.func, "id", "")) in (
                            "message", "draft"):
                    template, key = call.args[0], call.args[1]
                else:
                    continue
                if isinstance(key, ast.Name):
                    key = local.get(key.id, key)
                if not (isinstance(key, ast.Call) and isinstance(key.func, ast.Attribute)
                        and isinstance(key.func.value, ast.Name) and key.func.value.id == "keys"):
                    continue
                for name in _templates(template, key):
                    found.setdefault(name, set()).add(key.func.attr)
    return found


def test_the_history_and_the_flow_name_the_same_builder_for_each_message() -> None:
    """Read from the code: every message the demo history writes, the flow's cadences and steps
    key with the same keys.* function, so a demo client's live run finds what was sent."""
    history = _builders_by_template(sorted((ROOT / "tasks" / "history").glob("*.py")))
    flow = _builders_by_template([ROOT / p for p in FLOW_SIDE])
    assert {"welcome", "intake_request", "missing_info_reminder", "kickoff_confirmation",
            "kickoff_recap", "setup_progress_update", "handoff_packet",
            "ready_to_deliver"} <= set(history), history
    assert {t: flow.get(t) for t in history} == history
    assert all(len(names) == 1 for names in history.values()), history


def test_a_changed_key_function_changes_the_history_and_the_flow_alike(
        session: Session, playbook: Playbook, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run it: with every keys.* function made to return another key, the demo history and the
    flow's own steps (messages due, the packet, the ready notice) write only such keys, and the
    flow queues nothing the history already sent."""
    from tasks.history.demo import load_demo
    from tasks.onboarding.steps import confirm_ready, deliver_handoff_packet

    for name, fn in BUILDERS.items():
        if name not in ("kickoff_stamp", "alert_copy"):
            monkeypatch.setattr(keys, name, lambda *a, _fn=fn, _name=name, **k:
                                f"v2.{_name}|{_fn(*a, **k)}")
    with session.begin():
        load_demo(session, playbook, n=60, months=3, end=END, seed=7)
    with session.begin():
        history = {(r.onboarding_id, r.idempotency_key) for r in session.execute(
            select(Communication.onboarding_id, Communication.idempotency_key))}
        ready = session.scalars(select(Onboarding.id).where(
            Onboarding.stage == "ready_to_deliver", Onboarding.status == "active")).first()
        handed = session.scalars(select(Onboarding.id).where(
            Onboarding.status == "ready")).first()
    assert ready is not None and handed is not None
    deliver_handoff_packet.fn(ready)  # the history sent this client's packet
    confirm_ready.fn(handed)  # and told this one it was ready
    with session.begin():
        queue_due(session, playbook, END + dt.timedelta(hours=1))
    rows = session.execute(select(Communication.onboarding_id, Communication.template,
                                  Communication.idempotency_key)).all()
    unpatched = [r.idempotency_key for r in rows if not r.idempotency_key.startswith("v2.")]
    assert not unpatched, unpatched[:5]
    new = [r for r in rows if (r.onboarding_id, r.idempotency_key) not in history]
    once = {"welcome", "intake_request", "kickoff_recap", "handoff_packet", "ready_to_deliver"}
    sent_before = {(o, k.split("|", 1)[0]) for o, k in history}
    again = [r for r in new if r.template in once
             and (r.onboarding_id, f"v2.{r.template}") in sent_before]
    assert not again, again


def test_a_demo_client_ready_to_deliver_gets_no_second_packet(
        session: Session, playbook: Playbook) -> None:
    """The demo history keys its packet mail as the flow does: when the client's run starts
    and reaches the packet step, it finds the packet sent and queues none."""
    from tasks.history.demo import load_demo
    from tasks.onboarding.steps import deliver_handoff_packet

    with session.begin():
        load_demo(session, playbook, n=60, months=3, end=END, seed=7)
        ready = session.scalars(select(Onboarding.id).where(
            Onboarding.stage == "ready_to_deliver", Onboarding.status == "active")).all()
    assert ready
    for onboarding_id in ready:
        deliver_handoff_packet.fn(onboarding_id)
    with session.begin():
        packets = session.execute(
            select(Communication.onboarding_id, func.count()).where(
                Communication.template == "handoff_packet",
                Communication.onboarding_id.in_(ready))
            .group_by(Communication.onboarding_id)).all()
    assert {onboarding_id: count for onboarding_id, count in packets} == dict.fromkeys(ready, 1)
