"""`handoff inbox check`, run as the real console script against the real IMAP server."""

from __future__ import annotations

import json

import pytest

from db.playbook import Playbook
from tests.cli.test_cli import run
from tests.imap_server import ImapAccount, LoopbackImap
from tests.mail import messages
from tests.mail.test_inbox import CLIENTS, build_world, ny


def test_inbox_check_dry_run_then_for_real(sqlite_url: str, playbook: Playbook,
                                           imap_server: LoopbackImap, mailbox: ImapAccount,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    w = build_world(sqlite_url, playbook, imap_server, mailbox)
    reminder = w.sent("acme", "missing_info_reminder")[-1]
    w.append(messages.threaded_reply(sender=CLIENTS["acme"], answering=reminder.message_id,
                                     earlier=[], subject=reminder.subject, at=ny(9, 15)))
    w.append(messages.stranger(at=ny(9, 12)))
    as_of = ny(9, 15, 5).isoformat()

    dry = run(sqlite_url, "inbox", "check", "--dry-run", "--as-of", as_of).stdout
    assert f"from {CLIENTS['acme']}: reply, onboarding {w.ids['acme']} (thread)" in dry
    assert "from sam@leadgen.example: ignored, no onboarding" in dry
    assert dry.strip().endswith("1 ignored, 1 reply (dry run: nothing recorded)")
    again = json.loads(run(sqlite_url, "inbox", "check", "--as-of", as_of, "--json").stdout)
    assert again["counts"] == {"reply": 1, "ignored": 1} and not again["dry_run"]
    assert again["notices_sent"] == 1
    nothing = run(sqlite_url, "inbox", "check", "--as-of", as_of).stdout
    assert "0 message(s) read: nothing new" in nothing

    monkeypatch.setenv("HANDOFF_IMAP_PASSWORD", "wrong-password-here")
    failed = run(sqlite_url, "inbox", "check", ok=False)
    assert failed.returncode == 1
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "login refused" in lines[0], failed.stderr
    assert "wrong-password-here" not in failed.stderr

    monkeypatch.delenv("HANDOFF_IMAP_HOST")
    unset = run(sqlite_url, "inbox", "check").stdout
    assert "HANDOFF_IMAP_HOST is not set: the inbox is not read" in unset
