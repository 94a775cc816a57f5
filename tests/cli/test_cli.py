"""Every CLI command, run as the real `handoff` console script, as a VA would type it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HANDOFF = Path(sys.executable).with_name("handoff")
CLOSED = "2026-11-23T10:00"


def run(db_url: str, *args: str, ok: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `handoff ARGS` against the test database, with no Prefect server reachable (unless
    `env` says otherwise)."""
    full_env = {**os.environ, "HANDOFF_DATABASE_URL": db_url,
                "PREFECT_API_URL": "http://127.0.0.1:9/api", **(env or {})}
    result = subprocess.run([str(HANDOFF), *args], capture_output=True, text=True,
                            env=full_env, timeout=120)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def onboard(db_url: str, *extra: str, client: str = "Acme Dental") -> int:
    result = run(db_url, "onboard", "--client", client, "--segment", "smb", "--offer", "Growth",
                 "--owner", "va@northwind.example", "--backup", "va2@northwind.example",
                 "--contact", "pat@acme.example", "--closed-at", CLOSED, "--kickoff-by",
                 "2026-12-04", "--json", *extra)
    return int(json.loads(result.stdout)["id"])


def refused(db_url: str, *args: str, match: str) -> None:
    """A refused command prints one line on stderr naming the value, and writes nothing."""
    from db.session import session_factory
    from tests.factories import snapshot

    with session_factory(db_url)() as session:
        before = snapshot(session)
    result = run(db_url, *args, ok=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert match in lines[0], lines[0]
    with session_factory(db_url)() as session:
        assert snapshot(session) == before


def test_db_upgrade_and_playbook_show(sqlite_url: str) -> None:
    db_url = sqlite_url
    assert "up to date" in run(db_url, "db", "upgrade").stdout
    shown = run(db_url, "playbook", "show").stdout
    assert "1. Close confirmation [close_confirmation]" in shown
    assert "intake_questionnaire_completed" in shown
    data = json.loads(run(db_url, "playbook", "show", "--json").stdout)
    assert [s["key"] for s in data["stages"]][-1] == "ready_to_deliver"


def test_va_day(db_url: str) -> None:
    ob_id = onboard(db_url, "--no-flow")
    card = json.loads(run(db_url, "status", str(ob_id), "--json").stdout)
    assert card["stage"] == "close_confirmation"
    assert card["missing_artifacts"] == ["deal_terms_confirmed", "scope_and_timeline_captured"]
    assert card["next_action_due"] == "2026-11-24T15:00:00+00:00"  # one business day later

    added = run(db_url, "artifact", "add", str(ob_id), "deal_terms_confirmed", "--note",
                "SOW v2 signed", "--at", "2026-11-23T11:00")
    assert "deal_terms_confirmed recorded" in added.stdout
    assert "reconcile flow will start one" in added.stdout
    again = json.loads(run(db_url, "artifact", "add", str(ob_id), "deal_terms_confirmed",
                           "--json").stdout)
    assert again["created"] is False

    blocker = json.loads(run(db_url, "blocker", "open", str(ob_id), "--type", "missing_access",
                             "--critical", "--note", "no GA4 access", "--json").stdout)
    text = run(db_url, "status", str(ob_id)).stdout
    assert f"blocker: #{blocker['blocker']} missing_access (critical)" in text
    run(db_url, "blocker", "resolve", str(blocker["blocker"]))
    run(db_url, "qa", "record", str(ob_id), "--fail", "--reason", "CRM fields wrong")
    run(db_url, "qa", "record", str(ob_id), "--pass")
    run(db_url, "kickoff", "schedule", str(ob_id), "--when", "2026-12-01T10:00")
    run(db_url, "interruption", "log", "--category", "pricing", "--required", "--onboarding",
        str(ob_id))
    run(db_url, "sla", "exception", str(ob_id), "--sla", "welcome", "--reason",
        "client on holiday")
    run(db_url, "decision", "record", "--boundary", "scope_exception", "--decision",
        "add a landing page", "--by", "founder@northwind.example", "--onboarding", str(ob_id))
    run(db_url, "owner", "away", "va@northwind.example", "--until", "2099-01-01")
    run(db_url, "followup", "log", str(ob_id), "--note", "what's the status?")
    portfolio = json.loads(run(db_url, "status", "--json").stdout)
    assert [row["id"] for row in portfolio] == [ob_id]


def test_onboard_without_prefect_records_and_says_so(sqlite_url: str) -> None:
    db_url = sqlite_url
    result = run(db_url, "onboard", "--client", "Initech", "--segment", "smb", "--offer", "Growth",
                 "--owner", "va@northwind.example", "--backup", "va2@northwind.example",
                 "--contact", "bill@initech.example")
    assert "onboarding 1 created for Initech" in result.stdout
    assert "Prefect server not reachable at http://127.0.0.1:9/api" in result.stdout
    assert "reconcile flow will catch the run up" in result.stdout
    assert json.loads(run(db_url, "status", "1", "--json").stdout)["stage"] == "close_confirmation"


def test_import_is_all_or_nothing(db_url: str, tmp_path: Path) -> None:
    good = ("client,segment,offer,owner,backup,contact,closed_at,kickoff_by\n"
            "Acme,smb,Growth,va@northwind.example,va2@northwind.example,a@acme.example,"
            "2026-11-20T09:30,2026-12-01\n"
            "Globex,mid,Scale,va@northwind.example,ops@northwind.example,"
            "b@globex.example;c@globex.example,2026-11-21T14:00,\n")
    bad = good + ("Initech,smb,Growth,va@northwind.example,va2@northwind.example,not-an-email,"
                  "2026-11-22T10:00,\n")
    (tmp_path / "bad.csv").write_text(bad)
    refused(db_url, "import", str(tmp_path / "bad.csv"), "--no-flow",
            match="bad.csv line 4: contact 'not-an-email' is not an email address")
    (tmp_path / "good.csv").write_text(good)
    result = json.loads(run(db_url, "import", str(tmp_path / "good.csv"), "--no-flow",
                            "--json").stdout)
    assert len(result["imported"]) == 2


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["artifact", "add", "999", "deal_terms_confirmed"], "onboarding 999 does not exist"),
        (["artifact", "add", "{id}", "signed_sow"], "unknown artifact 'signed_sow'"),
        (["artifact", "add", "{id}", "deal_terms_confirmed", "--at", "yesterday"],
         "--at 'yesterday' is not an ISO 8601 time"),
        (["blocker", "open", "{id}", "--type", "weather"], "--type 'weather' is not known"),
        (["blocker", "resolve", "31337"], "blocker 31337 does not exist"),
        (["qa", "record", "{id}", "--fail"], "--reason is required when QA fails"),
        (["interruption", "log", "--category", "gossip", "--avoidable"],
         "--category 'gossip' is not known"),
        (["sla", "exception", "{id}", "--sla", "welcome"], "needs a logged rationale"),
        (["decision", "record", "--boundary", "contract_pricing_change", "--decision", "discount",
          "--by", "va@northwind.example"], "is a founder decision"),
        (["onboard", "--client", "X", "--segment", "s", "--offer", "o", "--owner", "nobody",
          "--backup", "b@x.example", "--contact", "c@x.example", "--no-flow"],
         "owner 'nobody' is not an email address"),
        (["onboard", "--client", "X", "--segment", "s", "--offer", "o", "--owner", "a@x.example",
          "--backup", "b@x.example", "--contact", "c@x.example", "--kickoff-by", "12/01/2026",
          "--no-flow"], "--kickoff-by '12/01/2026' is not a date like 2026-12-01"),
        (["onboard", "--client", "   ", "--segment", "s", "--offer", "o", "--owner",
          "a@x.example", "--backup", "b@x.example", "--contact", "c@x.example", "--no-flow"],
         "client is required"),
        (["import", "/nonexistent/deals.csv"], "does not exist"),
        (["action", "close", "5", "--note", "done"], "corrective action 5 does not exist"),
        (["owner", "away", "va@northwind.example", "--until", "2001-01-01"], "is in the past"),
    ],
)
def test_bad_input_one_line_nothing_written(sqlite_url: str, args: list[str], match: str) -> None:
    ob_id = onboard(sqlite_url, "--no-flow")
    refused(sqlite_url, *[a.replace("{id}", str(ob_id)) for a in args], match=match)


def test_uninitialised_database_is_explained(home: Path) -> None:
    url = f"sqlite:///{home / 'empty.db'}"
    result = run(url, "status", ok=False)
    assert result.returncode == 2
    assert "not set up; run 'handoff db upgrade'" in result.stderr


def test_backup_and_restore_round_trip(sqlite_url: str, tmp_path: Path) -> None:
    first = onboard(sqlite_url, "--no-flow", client="Before Backup")
    run(sqlite_url, "artifact", "add", str(first), "deal_terms_confirmed")
    backup = tmp_path / "backups" / "handoff.sqlite"
    assert "backed up" in run(sqlite_url, "db", "backup", str(backup)).stdout
    refused(sqlite_url, "db", "backup", str(backup), match="already exists; pass --force")
    onboard(sqlite_url, "--no-flow", client="After Backup")
    run(sqlite_url, "db", "restore", str(backup))
    rows = json.loads(run(sqlite_url, "status", "--json").stdout)
    assert [r["client"] for r in rows] == ["Before Backup"]
    card = json.loads(run(sqlite_url, "status", str(first), "--json").stdout)
    assert "deal_terms_confirmed" not in card["missing_artifacts"]
    (tmp_path / "junk.sqlite").write_text("not a database")
    refused(sqlite_url, "db", "restore", str(tmp_path / "junk.sqlite"),
            match="is not a SQLite database")


@pytest.mark.postgres
def test_backup_on_postgres_gives_pg_dump_guidance(pg_server_url: str, tmp_path: Path) -> None:
    result = run(pg_server_url, "db", "backup", str(tmp_path / "x"), ok=False)
    assert result.returncode == 2 and "pg_dump -Fc" in result.stderr
