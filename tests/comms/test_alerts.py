"""Team notices to chat through Apprise, against a loopback HTTP receiver (`json://`): each
notice posted once per channel across re-runs, retried when the channel is down, never twice."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Communication
from db.playbook import Playbook, get_playbook
from db.session import session_factory
from db.settings import get_settings
from tasks.comms.alerts import PREFIX
from tasks.comms.context import context
from tasks.comms.keys import alert_copy
from tasks.comms.snapshot import Client
from tasks.mail.delivery import deliver
from tasks.mail.outbox import Draft, enqueue_many
from tasks.onboarding import records
from tests.factories import new_onboarding
from tests.smtp_server import LoopbackSmtp

NOW = dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)  # a Tuesday, inside business hours
CONTACT, OWNER = "pat@acme.example", "va@northwind.example"


class Receiver:
    """A loopback HTTP endpoint that records every POST; `status` is what it answers."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if outer.status == 200:
                    outer.posts.append((self.path, json.loads(body)))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def routed(home: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Playbook:
    """The shipped playbook with lane C (client communication) routed to two chat channels."""
    raw = yaml.safe_load(get_playbook().model_dump_json(by_alias=True))
    raw["alerts"] = {"C": ["team", "ops"]}
    path = home.parent / "playbook.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("HANDOFF_PLAYBOOK_PATH", str(path))
    monkeypatch.setenv("HANDOFF_ALERT_URLS", json.dumps({
        "team": f"json://127.0.0.1:{receiver.port}/team",
        "ops": f"json://127.0.0.1:{receiver.port}/ops"}))
    get_settings.cache_clear()
    return get_playbook()


def rows(factory: sessionmaker[Session]) -> dict[str, Communication]:
    with factory() as session:
        return {r.idempotency_key: r for r in session.scalars(select(Communication))}


def test_a_bounce_notice_reaches_mail_and_each_channel_once(
        db_url: str, session: Session, routed: Playbook, receiver: Receiver,
        smtp: LoopbackSmtp) -> None:
    factory = session_factory(db_url)
    ob_id = new_onboarding(session, routed)
    with factory() as s:
        client = Client(row=records.get_onboarding(s, ob_id))
        welcome = Draft(onboarding_id=ob_id, template="welcome", recipients=[CONTACT],
                        key=f"welcome:{ob_id}", context=context(routed, client))
    with factory() as s, s.begin():
        enqueue_many(s, routed, [welcome], now=NOW)
    assert list(rows(factory)) == [welcome.key]  # client mail never goes to chat
    smtp.fail_next(550, stage="RCPT", text="mailbox unavailable")
    deliver(factory, routed, get_settings(), now=NOW)

    notice = f"delivery-failure:{welcome.key}"
    queued = rows(factory)
    assert set(queued) == {welcome.key, notice, alert_copy(notice, PREFIX + "team"),
                           alert_copy(notice, PREFIX + "ops")}
    assert queued[alert_copy(notice, PREFIX + "team")].audience == "alert"
    for minute in (1, 2, 3):  # re-runs of the delivery pass
        deliver(factory, routed, get_settings(), now=NOW + dt.timedelta(minutes=minute))
    assert sorted(path for path, _ in receiver.posts) == ["/ops", "/team"]
    posted = receiver.posts[0][1]
    assert posted["title"].startswith("Undeliverable: welcome to pat@acme.example")
    assert "mailbox unavailable" in posted["message"]
    owner_mail = [m for m in smtp.messages if m.rcpt_tos == (OWNER,)]
    assert len(owner_mail) == 1
    assert {r.status for r in rows(factory).values() if r.idempotency_key != welcome.key} == \
        {"sent"}


def escalation(playbook: Playbook, factory: sessionmaker[Session], ob_id: int) -> Draft:
    """The no-response escalation of one client, as the sweep drafts it (lane C)."""
    with factory() as session:
        client = Client(row=records.get_onboarding(session, ob_id))
    return Draft(onboarding_id=ob_id, template="threshold_escalation", recipients=[OWNER],
                 key=f"esc:no_response:{ob_id}:1",
                 context=context(playbook, client, rule={"title": "No response",
                                                         "action": "Call them"},
                                 detail="No answer to 3 reminders.", level="level 1 of 3",
                                 recipient_role="owner"))


def test_a_channel_that_is_down_is_retried_and_posted_once(
        db_url: str, session: Session, routed: Playbook, receiver: Receiver,
        smtp: LoopbackSmtp) -> None:
    factory = session_factory(db_url)
    ob_id = new_onboarding(session, routed)
    notice = escalation(routed, factory, ob_id)
    receiver.status = 503
    with factory() as s, s.begin():
        enqueue_many(s, routed, [notice], now=NOW)
    deliver(factory, routed, get_settings(), now=NOW)
    team = rows(factory)[alert_copy(notice.key, PREFIX + "team")]
    assert (team.status, team.attempts) == ("queued", 1)
    assert "did not accept" in (team.last_error or "")
    assert receiver.posts == []
    receiver.status = 200
    with factory() as s, s.begin():  # the sweep runs again and queues the same notice
        enqueue_many(s, routed, [notice], now=NOW + dt.timedelta(minutes=5))
    for minute in (5, 6, 60):
        deliver(factory, routed, get_settings(), now=NOW + dt.timedelta(minutes=minute))
    assert sorted(path for path, _ in receiver.posts) == ["/ops", "/team"]
    assert len([m for m in smtp.messages if m.rcpt_tos == (OWNER,)]) == 1


def test_a_channel_without_a_url_fails_and_the_owner_is_told(
        db_url: str, session: Session, routed: Playbook, receiver: Receiver,
        smtp: LoopbackSmtp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOFF_ALERT_URLS", json.dumps({
        "team": f"json://127.0.0.1:{receiver.port}/team"}))
    get_settings.cache_clear()
    factory = session_factory(db_url)
    ob_id = new_onboarding(session, routed)
    notice = escalation(routed, factory, ob_id)
    with factory() as s, s.begin():
        enqueue_many(s, routed, [notice], now=NOW)
    for minute in (0, 1, 2):
        deliver(factory, routed, get_settings(), now=NOW + dt.timedelta(minutes=minute))
    queued = rows(factory)
    ops = queued[alert_copy(notice.key, PREFIX + "ops")]
    assert ops.status == "failed"
    assert ops.last_error == "alert channel 'ops' has no URL in HANDOFF_ALERT_URLS"
    told = queued[f"delivery-failure:{ops.idempotency_key}"]
    assert (told.recipients, told.status) == (OWNER, "sent")
    assert [path for path, _ in receiver.posts].count("/team") == 2  # the notice, the failure


def test_an_smtp_login_refused_is_posted_once_per_outage_and_cleared(
        db_url: str, session: Session, routed: Playbook, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The transport alarm must reach people without mail: the SMTP server answers 535 to the
    # login, and every chat channel hears it once per outage, then once that mail flows again.
    factory = session_factory(db_url)
    ob_id = new_onboarding(session, routed)
    with factory() as s:
        client = Client(row=records.get_onboarding(s, ob_id))
    welcomes = [Draft(onboarding_id=ob_id, template="welcome", recipients=[CONTACT],
                      key=f"welcome:{ob_id}:{n}", context=context(routed, client))
                for n in range(2)]

    def login_with(password: str) -> None:
        monkeypatch.setenv("HANDOFF_SMTP_PASSWORD", password)
        get_settings.cache_clear()

    def posts() -> list[tuple[str, str]]:
        return sorted((path, body["title"]) for path, body in receiver.posts)

    with LoopbackSmtp(username="mailer", password="right") as server:
        for name, value in (("HOST", server.host), ("PORT", str(server.port)),
                            ("STARTTLS", "false"), ("USERNAME", "mailer")):
            monkeypatch.setenv(f"HANDOFF_SMTP_{name}", value)
        login_with("old-s3cret")
        with factory() as s, s.begin():
            enqueue_many(s, routed, welcomes[:1], now=NOW)
        for minute in (0, 5, 60):  # one outage, three passes meet it
            deliver(factory, routed, get_settings(), now=NOW + dt.timedelta(minutes=minute))
        down = "Northwind Studio: MAIL IS NOT GOING OUT"
        assert posts() == [("/ops", down), ("/team", down)]
        body = receiver.posts[0][1]["message"]
        assert "535" in body and "HANDOFF_SMTP_PASSWORD" in body and "old-s3cret" not in body
        assert server.count_connections == 3 and server.messages == []  # one login a pass

        login_with("right")
        deliver(factory, routed, get_settings(), now=NOW + dt.timedelta(minutes=61))
        deliver(factory, routed, get_settings(), now=NOW + dt.timedelta(minutes=62))
        up = "Northwind Studio: mail is going out again"
        assert posts() == sorted([("/ops", down), ("/team", down), ("/ops", up), ("/team", up)])
        assert len(server.messages) == 1

        login_with("old-s3cret")  # a second outage is a second alarm, and a second clear
        with factory() as s, s.begin():
            enqueue_many(s, routed, welcomes[1:], now=NOW + dt.timedelta(minutes=70))
        for minute in (70, 75):
            deliver(factory, routed, get_settings(), now=NOW + dt.timedelta(minutes=minute))
        login_with("right")
        deliver(factory, routed, get_settings(), now=NOW + dt.timedelta(minutes=80))
    assert [body["title"] for path, body in receiver.posts if path == "/team"] == [
        down, up, down, up]
    assert len(server.messages) == 2
    assert {r.status for r in rows(factory).values()} == {"sent"}
