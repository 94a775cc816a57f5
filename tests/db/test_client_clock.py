"""The client's own clock on the record: `--client-tz`, the CSV column, and a delivery pass that
reaches a client message after its window closed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from db.models import Communication
from db.playbook import Playbook
from db.session import session_factory
from db.settings import get_settings
from db.validation import HandoffError
from tasks.comms.sweeps import queue_due
from tasks.mail.delivery import deliver
from tasks.onboarding.importer import read_deals
from tasks.onboarding.status import describe
from tests.cli.test_cli import onboard, refused
from tests.factories import new_onboarding

NY = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")


def test_a_pass_that_reaches_client_mail_after_its_window_waits_for_the_next(
        sqlite_url: str, playbook: Playbook) -> None:
    factory = session_factory(sqlite_url)
    closed = dt.datetime(2026, 3, 2, 16, 10, tzinfo=SYDNEY)  # Monday, 00:10 in New York
    with factory() as session:
        ob_id = new_onboarding(session, playbook, closed_at=closed, kickoff_by=None,
                               client_tz="Australia/Sydney")
    queued_at = dt.datetime(2026, 3, 2, 16, 30, tzinfo=SYDNEY)
    with factory.begin() as session:
        queue_due(session, playbook, queued_at, escalations=False)
    with factory() as session:
        (welcome,) = session.scalars(select(Communication))
        assert welcome.next_attempt_at == queued_at  # inside Sydney's hours: at once
    # The pass runs an hour late, at 17:30 in Sydney: the welcome waits for 09:00 Tuesday.
    report = deliver(factory, playbook, get_settings(), now=queued_at + dt.timedelta(hours=1))
    assert (report.sent, report.deferred) == (0, 1)
    tuesday = dt.datetime(2026, 3, 3, 9, tzinfo=SYDNEY)
    with factory() as session:
        (welcome,) = session.scalars(select(Communication))
        assert (welcome.status, welcome.next_attempt_at, welcome.onboarding_id) == (
            "queued", tuesday, ob_id)
    assert deliver(factory, playbook, get_settings(), now=tuesday).sent == 1


def test_client_tz_from_the_cli(sqlite_url: str, playbook: Playbook) -> None:
    refused(sqlite_url, "onboard", "--client", "X", "--segment", "s", "--offer", "o",
            "--owner", "a@x.example", "--backup", "b@x.example", "--contact", "c@x.example",
            "--client-tz", "Mars/Olympus", "--no-flow",
            match="client-tz 'Mars/Olympus' is not an IANA timezone")
    ob_id = onboard(sqlite_url, "--no-flow", "--client-tz", "Australia/Sydney")
    with session_factory(sqlite_url)() as session:
        card = describe(session, playbook, ob_id)
    assert card["client_tz"] == "Australia/Sydney"
    assert "client:  in Australia/Sydney" in card["text"]


def test_client_tz_from_the_csv(tmp_path: Path) -> None:
    header = "client,segment,offer,owner,backup,contact,closed_at,client_tz\n"
    row = "{},smb,Growth,va@northwind.example,va2@northwind.example,a@acme.example," \
          "2026-11-20T09:30,{}\n"
    (tmp_path / "bad.csv").write_text(header + row.format("Acme", "Europe/Berlin")
                                      + row.format("Globex", "Berlin"))
    with pytest.raises(HandoffError, match="^bad.csv line 3: client-tz 'Berlin' is not an "
                                           "IANA timezone"):
        read_deals(tmp_path / "bad.csv", NY)
    (tmp_path / "good.csv").write_text(header + row.format("Acme", "Europe/Berlin")
                                       + row.format("Globex", ""))
    assert [d.client_tz for d in read_deals(tmp_path / "good.csv", NY)] == [
        "Europe/Berlin", None]
