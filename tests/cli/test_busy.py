"""VAs recording at once: every `handoff artifact add` either records its fact and says so, or
prints one line saying the database was busy and records nothing. Never a traceback, and never
"failed" for a fact that was recorded. SQLite (20 commands on 10 clients, once with SQLite's
default patience and once with almost none) and PostgreSQL (50 on 25)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Artifact
from db.playbook import Playbook
from db.session import session_factory
from tests.factories import new_onboarding

HANDOFF = Path(sys.executable).with_name("handoff")
KEYS = ("deal_terms_confirmed", "scope_and_timeline_captured")
BUSY = "error: the database is busy; nothing was recorded, try again"


def _at_once(db_url: str, clients: int, busy_ms: str | None, tmp_path: Path,
             playbook: Playbook) -> None:
    factory = session_factory(db_url)
    ids = []
    for number in range(clients):
        with factory() as session:
            ids.append(new_onboarding(session, playbook, client=f"Client {number}"))
    env = {**os.environ, "HANDOFF_DATABASE_URL": db_url,
           "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    if busy_ms is not None:
        env["HANDOFF_SQLITE_BUSY_MS"] = busy_ms
    commands = [(ob_id, key) for ob_id in ids for key in KEYS]
    running = [(ob_id, key, subprocess.Popen(
        [str(HANDOFF), "artifact", "add", str(ob_id), key, "--json"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) for ob_id, key in commands]
    outcomes = [(ob_id, key, proc.wait(900), *proc.communicate()) for ob_id, key, proc in running]

    with factory() as session:
        recorded = set(session.execute(select(Artifact.onboarding_id, Artifact.key)).tuples())
    for ob_id, key, code, out, err in outcomes:
        assert "Traceback" not in out + err, err
        if code == 0:
            report = json.loads(out)
            assert (report["key"], report["created"]) == (key, True)
            assert (ob_id, key) in recorded  # said recorded: it is
        else:
            assert err.strip() == BUSY, (code, err)  # one line…
            assert (ob_id, key) not in recorded  # …and nothing recorded
    assert any(code == 0 for *_, code, _, _ in outcomes)


def test_twenty_vas_at_once_on_sqlite(sqlite_url: str, tmp_path: Path,
                                      playbook: Playbook) -> None:
    _at_once(sqlite_url, 10, None, tmp_path, playbook)


def test_twenty_vas_at_once_on_an_impatient_sqlite(sqlite_url: str, tmp_path: Path,
                                                   playbook: Playbook) -> None:
    _at_once(sqlite_url, 10, "1", tmp_path, playbook)  # 1 ms: the busy path is taken


@pytest.mark.postgres
def test_fifty_vas_at_once_on_postgresql(pg_server_url: str, home: Path, tmp_path: Path,
                                         playbook: Playbook) -> None:
    from tests.conftest import _truncate

    _truncate(pg_server_url)
    _at_once(pg_server_url, 25, None, tmp_path, playbook)
