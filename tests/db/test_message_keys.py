"""Every message key is built by tasks.comms.keys: the history generator, the sweeps and the flow
call the same functions, so a demo client's history and its live run agree on what was sent."""

from __future__ import annotations

import datetime as dt
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Communication
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
    assert {"welcome", "intake_request", "missing_info_reminder", "kickoff_confirmation",
            "kickoff_recap", "setup_progress_update", "handoff_packet", "ready_to_deliver",
            "blocker_escalation"} <= used, used


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
