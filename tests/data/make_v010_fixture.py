"""Make tests/data/v0.1.0.db.gz: a database written by the first release (tag v0.1.0), for the
upgrade test. Run it against THAT release's code, never the current one:

    git worktree add /tmp/v010 v0.1.0
    cd /tmp/v010 && PYTHONPATH=/tmp/v010 /path/to/repo/.venv/bin/python \\
        /path/to/repo/tests/data/make_v010_fixture.py /path/to/repo/tests/data

What it holds, every row written by v0.1.0's own code paths:
- `handoff demo --onboardings 40 --months 3` (the seeded history, packets, audits, actions);
- one client walked through all five stages with the CLI (artifacts, a blocker opened and
  resolved, a follow-up, a kickoff, a failed then a passed QA, an incident, an SLA exception, a
  founder decision, an interruption, an owner away) and the flow's own steps (message delivery,
  stage advances, the handoff packet, the ready-to-deliver mail);
- a client left waiting at close confirmation with a critical blocker;
- outbox rows of every status: sent (file transport), queued (retry after a refused
  connection, and not yet due), failed (a 550 from a real loopback SMTP server), sending (a
  delivery that claimed and stopped) and uncertain (an orphaned claim found by the next pass).
Next to it: v0.1.0.kpis.json, the KPI table v0.1.0 computed from it (`handoff kpi --json`).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

AS_OF = "2026-11-26T12:00:00+00:00"  # the KPI table is computed for this instant


def dead_port() -> int:
    """A loopback port nobody listens on (the Prefect API the CLI must not reach)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(out_dir: Path) -> None:
    from alembic.script import ScriptDirectory

    from db.session import alembic_config

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if heads != ["0001"]:
        sys.exit(f"run this against the v0.1.0 checkout (alembic heads {heads}, expected 0001)")
    home = Path(tempfile.mkdtemp(prefix="handoff-v010-"))
    db_path = home / "handoff.db"
    env = {**os.environ, "HANDOFF_HOME": str(home),
           "HANDOFF_DATABASE_URL": f"sqlite:///{db_path}",
           "HANDOFF_PREFECT_API_URL": f"http://127.0.0.1:{dead_port()}/api",
           "PREFECT_API_URL": f"http://127.0.0.1:{dead_port()}/api",
           "PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1"}
    env.pop("HANDOFF_SMTP_HOST", None)
    os.environ.update(env)
    # The CLI must not reach any Prefect server; the flow steps below run on an ephemeral one.
    del os.environ["PREFECT_API_URL"]
    os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "true"
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"

    def handoff(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", "from deployments.cli import main; main()",
                               *args], env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"handoff {' '.join(args)} failed: {done.stderr.strip()}")
        print(f"$ handoff {' '.join(args)}\n{done.stdout.strip()}")
        return done.stdout

    handoff("db", "upgrade")
    handoff("demo", "--onboardings", "40", "--months", "3", "--seed", "11")
    walked = json.loads(handoff(
        "onboard", "--client", "Walked Dental", "--segment", "smb", "--offer", "Growth retainer",
        "--owner", "va@northwind.example", "--backup", "va2@northwind.example",
        "--contact", "pat@walked.example", "--kickoff-by", "2026-12-04",
        "--first-milestone", "2026-12-18", "--terms", "SOW v2 signed, net 30",
        "--scope", "SEO + ads, 3 months", "--closed-at", "2026-11-16T10:00", "--json"))["id"]
    waiting = json.loads(handoff(
        "onboard", "--client", "Waiting Studio", "--segment", "mid_market",
        "--offer", "Launch sprint", "--owner", "va2@northwind.example",
        "--backup", "va@northwind.example", "--contact", "sam@waiting.example",
        "--closed-at", "2026-11-20T09:30", "--json"))["id"]
    handoff("blocker", "open", str(waiting), "--type", "approval_delay", "--critical",
            "--note", "legal review of the SOW", "--at", "2026-11-20T15:00")

    walk(handoff, walked)
    outbox_states(handoff)
    kpis = handoff("kpi", "--json", "--as-of", AS_OF)

    compact = home / "compact.db"
    with sqlite3.connect(db_path) as src:
        src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        src.execute(f"VACUUM INTO '{compact}'")
    with sqlite3.connect(compact) as conn:
        counts = dict(conn.execute("SELECT status, count(*) FROM communications GROUP BY status"))
    target = out_dir / "v0.1.0.db.gz"
    target.write_bytes(gzip.compress(compact.read_bytes(), mtime=0))
    (out_dir / "v0.1.0.kpis.json").write_text(kpis)
    print(f"wrote {target} ({target.stat().st_size // 1024} KiB), outbox {counts}")


def walk(run: Callable[..., str], oid: int) -> None:
    """The VA's commands and the flow's own steps (stage advance, delivery, packet), in order."""
    from prefect import flow

    from tasks.onboarding.steps import (
        advance_stage,
        check_stage_exit,
        confirm_ready,
        deliver_handoff_packet,
        send_due_messages,
    )

    @flow(name="v010-fixture-walk")
    def steps(stage: str) -> None:
        send_due_messages(oid)
        if stage == "ready_to_deliver":
            deliver_handoff_packet(oid)
        check = check_stage_exit(oid, stage)
        if not check.met:
            sys.exit(f"the walked client cannot leave {stage}: {check.problems}")
        advance_stage(oid, stage)
        if stage == "ready_to_deliver":
            confirm_ready(oid)

    steps("close_confirmation")
    run("artifact", "add", str(oid), "docs_and_access_requested", "risk_flags_captured",
        "--at", "2026-11-17T11:00")
    blocker = run("blocker", "open", str(oid), "--type", "missing_documents",
                  "--note", "brand assets", "--at", "2026-11-17T12:00", "--json")
    run("followup", "log", str(oid), "--kind", "followup_request", "--note", "status?",
        "--at", "2026-11-18T09:00")
    run("blocker", "resolve", str(json.loads(blocker)["blocker"]), "--note", "assets received",
        "--at", "2026-11-18T16:00")
    run("artifact", "add", str(oid), "intake_questionnaire_completed", "scope_summary_documented",
        "required_assets_received", "system_access_verified", "kickoff_agenda_prepared",
        "owner_map_confirmed", "--at", "2026-11-18T17:00")
    steps("intake_completion")
    run("kickoff", "schedule", str(oid), "--when", "2026-11-20T10:00")
    run("artifact", "add", str(oid), "kickoff_call_held", "responsibilities_clarified",
        "communication_cadence_set", "--at", "2026-11-20T11:00")
    steps("kickoff_alignment")
    run("artifact", "add", str(oid), "tools_assets_workflows_configured",
        "checklist_tasks_completed", "--at", "2026-11-24T15:00")
    run("qa", "record", str(oid), "--fail", "--reason", "tracking pixel missing",
        "--at", "2026-11-24T16:00")
    run("qa", "record", str(oid), "--pass", "--at", "2026-11-25T10:00")
    steps("setup_execution")
    run("artifact", "add", str(oid), "first_milestone_confirmed", "success_criteria_documented",
        "setup_tasks_complete", "quality_checks_passed", "first_milestone_date_confirmed",
        "client_recap_sent", "delivery_packet_signed_off", "--at", "2026-11-25T14:00")
    steps("ready_to_deliver")
    run("sla", "exception", str(oid), "--sla", "kickoff_alignment",
        "--reason", "client travelling")
    run("decision", "record", "--boundary", "scope_exception", "--decision", "add landing page",
        "--by", "founder@northwind.example", "--onboarding", str(oid))
    run("interruption", "log", "--category", "scheduling", "--avoidable", "--onboarding", str(oid))
    run("incident", "log", str(oid), "--severity", "minor", "--note", "late report")
    run("owner", "away", "va2@northwind.example", "--until", "2026-12-31")


def outbox_states(run: Callable[..., str]) -> None:
    """Outbox rows in every status, each reached by v0.1.0's delivery code."""
    from db.playbook import get_playbook
    from db.session import session_factory
    from db.settings import Settings
    from tasks.comms.sweeps import queue_due
    from tasks.mail import delivery as outbox
    from tests.smtp_server import LoopbackSmtp

    ids = [json.loads(run(
        "onboard", "--client", f"Outbox {name}", "--segment", "smb", "--offer", "Ops audit",
        "--owner", "va@northwind.example", "--backup", "va2@northwind.example",
        "--contact", f"ops@{name.lower()}.example", "--no-flow", "--json"))["id"]
        for name in ("Failed", "Retried", "Sending", "Uncertain", "Queued")]
    failed, retried, sending, uncertain, _queued = ids
    playbook, factory = get_playbook(), session_factory()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=7)  # inside some send window
    with factory() as session, session.begin():
        queue_due(session, playbook, later, escalations=False, onboarding_ids=ids)
    with LoopbackSmtp() as smtp:
        smtp_settings = Settings(smtp_host=smtp.host, smtp_port=smtp.port, smtp_starttls=False,
                                 smtp_timeout=5)
        smtp.fail_next(550, stage="RCPT", count=100)
        outbox.deliver(factory, playbook, smtp_settings, now=later, onboarding_id=failed)
    refused = Settings(smtp_host="127.0.0.1", smtp_port=dead_port(), smtp_starttls=False,
                       smtp_timeout=5)
    outbox.deliver(factory, playbook, refused, now=later, onboarding_id=retried)
    for oid in (sending, uncertain):  # a delivery that claimed its rows and then stopped
        with factory() as session, session.begin():
            outbox._claim(session, later, oid, 100)
    with factory() as session, session.begin():  # the next pass, past the sending lease
        session.execute(outbox.update(outbox.Communication)
                        .where(outbox.Communication.onboarding_id == uncertain)
                        .values(claimed_at=outbox.utcnow() - outbox.SENDING_LEASE * 2))
        outbox._mark_orphans(session, playbook, later)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
