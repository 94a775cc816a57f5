"""The inbox sweep against a real IMAP server (Dovecot on loopback) and the app database
(SQLite and PostgreSQL), with real-shaped messages appended over IMAP.

The story, New York time, December 2026: four clients close on Monday 12-07 at 10:00 and sit in
intake. Welcome and intake request go at 10:30, reminder 1 on Tuesday at 11:00, reminder 2 on
Wednesday at 11:00. Then the mailbox fills: Acme's contact answers reminder 2 (threaded); Birch's
contact is away (Gmail, Exchange and a Precedence-style autoresponder all answer); Cedar's
intake request bounced (the contact address has a typo); Delta's contact writes a new mail with no
threading headers; a stranger pitches leads. Expected: Acme's reply is one response, the owner is
told once, no reminder inside the one-business-day pause, no no-response escalation; Birch's
auto-replies change nothing, Birch is escalated as usual; Cedar's request is `bounced` and the
owner is told once, naming the bad address; Delta's mail is "probable" and only shown; the
stranger leaves no trace.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import (
    ClientResponse,
    Communication,
    Event,
    InboundMessage,
    MailboxCursor,
)
from db.playbook import Playbook
from db.session import session_factory
from db.settings import get_settings
from tasks.comms.sweeps import run_sweep
from tasks.mail.inbox.fetch import InboxUnavailable, MailboxConfig
from tasks.mail.inbox.sweep import NOT_CONFIGURED, InboxReport, _pass, run_inbox_sweep
from tasks.onboarding import records
from tests.factories import stage_items
from tests.imap_server import ImapAccount, LoopbackImap
from tests.mail import messages

NY = ZoneInfo("America/New_York")
OWNER = "va@northwind.example"
BACKUP = "va2@northwind.example"
CLIENTS = {"acme": "dana@acme.example", "birch": "pat@birch.example",
           "cedar": "lee@cedarr.example", "delta": "lee@delta.example"}


def ny(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=NY)


@dataclass
class World:
    factory: sessionmaker[Session]
    playbook: Playbook
    ids: dict[str, int]
    server: LoopbackImap
    account: ImapAccount

    def tx(self, action):  # type: ignore[no-untyped-def]
        with self.factory() as session, session.begin():
            return action(session)

    def sweep(self, at: dt.datetime, **kwargs: bool) -> None:
        run_sweep(self.factory, self.playbook, get_settings(), at, **kwargs)

    def inbox(self, at: dt.datetime, **kwargs: bool) -> InboxReport:
        return run_inbox_sweep(self.factory, self.playbook, get_settings(), at, **kwargs)

    def sent(self, client: str, template: str) -> list[Communication]:
        def rows(session: Session) -> list[Communication]:
            found = list(session.scalars(select(Communication).where(
                Communication.onboarding_id == self.ids[client],
                Communication.template == template).order_by(Communication.id)))
            session.expunge_all()
            return found
        return self.tx(rows)  # type: ignore[no-any-return]

    def count(self, model: type, **where: object) -> int:
        def run(session: Session) -> int:
            query = select(func.count()).select_from(model)
            for key, value in where.items():
                query = query.where(getattr(model, key) == value)
            return int(session.scalar(query) or 0)
        return self.tx(run)  # type: ignore[no-any-return]

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        self.server.append(self.account, raw, folder)


@pytest.fixture
def world(db_url: str, playbook: Playbook, imap_server: LoopbackImap,
          mailbox: ImapAccount) -> World:
    """The story on SQLite and on PostgreSQL."""
    return build_world(db_url, playbook, imap_server, mailbox)


@pytest.fixture
def lite(sqlite_url: str, playbook: Playbook, imap_server: LoopbackImap,
         mailbox: ImapAccount) -> World:
    """The story on SQLite only, for what does not depend on the database."""
    return build_world(sqlite_url, playbook, imap_server, mailbox)


def build_world(url: str, playbook: Playbook, imap_server: LoopbackImap,
                mailbox: ImapAccount) -> World:
    factory = session_factory(url)
    ids = {}
    for name, contact in CLIENTS.items():
        def create(session: Session, name: str = name, contact: str = contact) -> int:
            new = records.NewOnboarding.parse(
                client=f"{name.title()} Co", segment="smb", offer="Growth retainer", owner=OWNER,
                backup=BACKUP, contacts=[contact], closed_at=ny(7, 10), kickoff_by=None,
                first_milestone=None)
            ob = records.create_onboarding(session, playbook, new, actor="test")
            for key in stage_items(playbook, "close_confirmation"):
                records.record_artifact(session, playbook, ob.id, key, by="test", at=ny(7, 10))
            records.advance(session, playbook, ob.id, actor="test", at=ny(7, 10))
            return ob.id
        with factory() as session, session.begin():
            ids[name] = create(session)
    w = World(factory=factory, playbook=playbook, ids=ids, server=imap_server, account=mailbox)
    w.sweep(ny(7, 10, 30))  # welcome + intake request
    w.sweep(ny(8, 11))  # reminder 1
    w.sweep(ny(9, 11))  # reminder 2
    assert all(len(w.sent(c, "missing_info_reminder")) == 2 for c in CLIENTS)
    return w


def fill_mailbox(w: World) -> None:
    acme_chain = [r.message_id for r in w.sent("acme", "intake_request")
                  + w.sent("acme", "missing_info_reminder")]
    reminder = w.sent("acme", "missing_info_reminder")[-1]
    w.append(messages.threaded_reply(sender=CLIENTS["acme"], answering=acme_chain[-1],
                                     earlier=acme_chain[:-1], subject=reminder.subject,
                                     at=ny(9, 15)))
    birch = w.sent("birch", "missing_info_reminder")[-1]
    for build in (messages.gmail_out_of_office, messages.exchange_out_of_office,
                  messages.precedence_auto_reply):
        w.append(build(sender=CLIENTS["birch"], answering=birch.message_id, subject=birch.subject,
                       at=ny(9, 11, 1)))
    cedar = w.sent("cedar", "intake_request")[0]
    w.append(messages.postfix_bounce(bad_address=CLIENTS["cedar"], original_id=cedar.message_id,
                                     original_subject=cedar.subject, at=ny(7, 10, 31)))
    w.append(messages.unthreaded_reply(sender=CLIENTS["delta"], at=ny(9, 14)))
    w.append(messages.stranger(at=ny(9, 12)))


def test_replies_auto_replies_bounces_and_strangers(world: World) -> None:
    w = world
    fill_mailbox(w)
    report = w.inbox(ny(9, 15, 5))
    outcomes = {(h.sender, h.outcome) for h in report.handled}
    assert outcomes == {(CLIENTS["acme"], "reply"), (CLIENTS["birch"], "auto_reply"),
                        ("mailer-daemon@mail.northwind.example", "bounce"),
                        (CLIENTS["delta"], "probable_reply"),
                        ("sam@leadgen.example", "ignored")}
    assert Counter(h.outcome for h in report.handled)["auto_reply"] == 3

    # Acme: one response, threaded to reminder 2, dated by its Date header.
    def acme_responses(session: Session) -> list[tuple[str | None, dt.datetime, str | None]]:
        return [(r.template, r.at, r.message_id) for r in session.scalars(
            select(ClientResponse).where(ClientResponse.onboarding_id == w.ids["acme"]))]
    [(template, at, message_id)] = w.tx(acme_responses)
    assert template == "missing_info_reminder" and at == ny(9, 15) and message_id
    [notice] = w.sent("acme", "client_reply")
    assert notice.recipients == OWNER and notice.status == "sent"  # delivered in the same pass
    assert notice.subject == f"Reply from Acme Co: {CLIENTS['acme']}"
    assert "Attached, thanks! The questionnaire is done" in notice.body_text
    assert "Reminder: 2 items still needed" not in notice.body_text  # the quote is cut
    assert "Thu 10 Dec 2026, 15:00" in notice.body_text  # paused one business day
    # A reply never ticks an artifact by itself.
    assert w.count(Event, onboarding_id=w.ids["acme"], kind="artifact_recorded") == len(
        stage_items(w.playbook, "close_confirmation"))

    # Birch: three auto-replies, each recorded and logged, nothing else.
    assert w.count(InboundMessage, onboarding_id=w.ids["birch"], kind="auto_reply") == 3
    assert w.count(Event, onboarding_id=w.ids["birch"], kind="auto_reply_received") == 3
    assert w.count(ClientResponse, onboarding_id=w.ids["birch"]) == 0
    assert w.sent("birch", "client_reply") == []

    # Cedar: the intake request is bounced with the diagnostic; the owner is told once.
    [bounced] = w.sent("cedar", "intake_request")
    assert bounced.status == "bounced"
    assert bounced.last_error and "550 5.1.1" in bounced.last_error
    [failure] = w.sent("cedar", "delivery_failure")
    assert failure.recipients == OWNER
    assert failure.subject == f"Undeliverable: intake_request to {CLIENTS['cedar']}"
    assert "A message bounced" in failure.body_text and CLIENTS["cedar"] in failure.body_text
    assert w.sent("cedar", "welcome")[0].status == "sent"  # only the returned message

    # Delta: probable, shown to the owner, not acted on.
    [probable] = w.tx(lambda s: [(r.probable, r.matched_by) for r in s.scalars(
        select(InboundMessage).where(InboundMessage.onboarding_id == w.ids["delta"]))])
    assert probable == (True, "contact")
    assert w.count(ClientResponse, onboarding_id=w.ids["delta"]) == 0
    [maybe] = w.sent("delta", "client_reply")
    assert maybe.subject.startswith("Possible reply from Delta Co")
    assert "here are the logins you asked for" in maybe.body_text
    assert "earlier text" not in maybe.body_text
    assert f"handoff followup log {w.ids['delta']} --kind response" in maybe.body_text

    # The stranger: nothing recorded anywhere.
    assert w.count(InboundMessage) == 1 + 3 + 1 + 1
    assert w.tx(lambda s: s.scalar(select(func.count()).select_from(Event).where(
        Event.detail.is_not(None), Event.kind.like("%leadgen%")))) == 0

    # The mailbox is as the VA left it: nothing marked read.
    flags = w.server.flags(w.account)
    assert len(flags) == 7 and not any("\\Seen" in f for f in flags.values())

    # Thursday 11:00: Acme is inside its pause; Birch and Delta left two reminders unanswered,
    # so their cadence has slowed (the shipped `at_escalation: slow`): reminder 3 on Friday.
    w.sweep(ny(10, 11))
    assert len(w.sent("acme", "missing_info_reminder")) == 2
    assert {c: len(w.sent(c, "missing_info_reminder")) for c in ("birch", "delta")} == {
        "birch": 2, "delta": 2}
    w.sweep(ny(10, 15, 30))  # the pause is over: the cadence goes on
    assert len(w.sent("acme", "missing_info_reminder")) == 3
    # Friday 11:15, when "no response after 2 reminder cycles" fires: not for Acme.
    w.sweep(ny(11, 11, 15), messages=False)
    escalated = {name for name in CLIENTS
                 for row in w.sent(name, "threshold_escalation") if "no_response" in
                 row.idempotency_key}
    assert escalated == {"birch", "cedar", "delta"}


def twice_at_once(action) -> list[object]:  # type: ignore[no-untyped-def]
    results: list[object] = []

    def run() -> None:
        try:
            results.append(action())
        except BaseException as exc:  # noqa: BLE001 - asserted by the caller
            results.append(exc)
    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_run_twice_and_twice_at_once_records_nothing_twice(world: World) -> None:
    w = world
    fill_mailbox(w)
    # Twice at once: the lease lets one pass read; the other is told it is running elsewhere.
    results = twice_at_once(lambda: w.inbox(ny(9, 15, 5)))
    assert sorted(type(r).__name__ for r in results) == ["InboxReport", "LeaseHeld"], results
    before = {m.__name__: w.count(m) for m in (InboundMessage, ClientResponse, Communication)}
    assert before["InboundMessage"] == 6 and before["ClientResponse"] == 1

    again = w.inbox(ny(9, 15, 10))
    assert again.handled == []  # the cursor moved past everything
    # The cursor lost (a restored backup): everything is read again, nothing is recorded twice.
    w.tx(lambda s: s.execute(delete(MailboxCursor)))
    reread = w.inbox(ny(9, 15, 15))
    assert len(reread.handled) == 7
    assert {h.outcome for h in reread.handled} == {"ignored"}
    # And two passes at once without the lease (it expired under a hung pass): the unique
    # Message-IDs decide, both passes finish.
    w.tx(lambda s: s.execute(delete(MailboxCursor)))
    w.tx(lambda s: s.execute(delete(InboundMessage).where(
        InboundMessage.onboarding_id == w.ids["birch"])))
    config = MailboxConfig.from_settings(get_settings())
    assert config is not None
    raced = twice_at_once(lambda: _pass(w.factory, w.playbook, get_settings(), config,
                                        ny(9, 15, 20), dry_run=False))
    assert all(isinstance(r, InboxReport) for r in raced), raced
    recorded = [h for r in raced if isinstance(r, InboxReport) for h in r.handled
                if h.outcome == "auto_reply"]
    assert len(recorded) == 3  # each auto-reply recorded by exactly one of the two passes
    after = {m.__name__: w.count(m) for m in (InboundMessage, ClientResponse, Communication)}
    assert after == before
    assert len(w.sent("acme", "client_reply")) == 1 and len(w.sent("cedar",
                                                                   "delivery_failure")) == 1
    assert w.count(Event, onboarding_id=w.ids["birch"], kind="auto_reply_received") == 3 + 3


def test_a_uidvalidity_change_rereads_without_duplicates(
        lite: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = lite
    monkeypatch.setenv("HANDOFF_IMAP_FOLDER", "Onboarding")
    get_settings.cache_clear()
    acme = w.sent("acme", "missing_info_reminder")[-1]
    first = messages.threaded_reply(sender=CLIENTS["acme"], answering=acme.message_id,
                                    earlier=[], subject=acme.subject, at=ny(9, 15))
    w.append(first, "Onboarding")
    old = w.server.uidvalidity(w.account, "Onboarding")
    assert [h.outcome for h in w.inbox(ny(9, 15, 5)).handled] == ["reply"]

    # The folder is rebuilt (a migration, a restore): new UIDVALIDITY, same messages, one more.
    w.server.recreate_folder(w.account, "Onboarding")
    assert w.server.uidvalidity(w.account, "Onboarding") != old
    w.append(first, "Onboarding")
    birch = w.sent("birch", "missing_info_reminder")[-1]
    w.append(messages.threaded_reply(sender=CLIENTS["birch"], answering=birch.message_id,
                                     earlier=[], subject=birch.subject, at=ny(9, 16)),
             "Onboarding")
    report = w.inbox(ny(9, 16, 5))
    assert report.reread
    assert [h.outcome for h in report.handled] == ["ignored", "reply"]
    assert w.count(ClientResponse) == 2 and w.count(InboundMessage) == 2
    [cursor] = w.tx(lambda s: [(c.uidvalidity, c.last_uid) for c in s.scalars(
        select(MailboxCursor))])
    assert cursor == (w.server.uidvalidity(w.account, "Onboarding"), 2)


def test_imap_down_or_wrong_password_fails_with_one_line_and_the_next_pass_catches_up(
        lite: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = lite
    fill_mailbox(w)
    monkeypatch.setenv("HANDOFF_IMAP_PASSWORD", "not-the-password")
    get_settings.cache_clear()
    with pytest.raises(InboxUnavailable) as refused:
        w.inbox(ny(9, 15, 5))
    line = str(refused.value)
    assert "\n" not in line and "login refused" in line and "app password" in line
    assert "not-the-password" not in line and w.account.password not in line

    monkeypatch.setenv("HANDOFF_IMAP_PASSWORD", w.account.password)
    monkeypatch.setenv("HANDOFF_IMAP_PORT", str(closed_port()))
    get_settings.cache_clear()
    with pytest.raises(InboxUnavailable, match=r"connect failed: connection refused"):
        w.inbox(ny(9, 15, 5))
    assert w.count(InboundMessage) == 0 and w.count(MailboxCursor) == 0  # nothing half-done

    monkeypatch.setenv("HANDOFF_IMAP_PORT", str(w.server.port))
    get_settings.cache_clear()
    caught_up = w.inbox(ny(9, 15, 10))
    assert len(caught_up.handled) == 7 and w.count(ClientResponse) == 1


def test_the_certificate_is_verified(lite: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANDOFF_IMAP_CAFILE")
    get_settings.cache_clear()
    with pytest.raises(InboxUnavailable, match="certificate did not verify"):
        lite.inbox(ny(9, 15, 5))


def test_implicit_tls_and_the_signed_reply_to(lite: World,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """SSL on its own port; a reply to the signed plus-address, without threading headers, is
    matched for certain; a forged signature is not."""
    w = lite
    monkeypatch.setenv("HANDOFF_IMAP_SSL", "true")
    monkeypatch.setenv("HANDOFF_IMAP_STARTTLS", "false")
    monkeypatch.setenv("HANDOFF_IMAP_PORT", str(w.server.ssl_port))
    monkeypatch.setenv("HANDOFF_REPLY_TO", "onboarding@northwind.example")
    monkeypatch.setenv("HANDOFF_SECRET_KEY", "a-long-random-secret-for-tests")
    get_settings.cache_clear()
    from tasks.mail.inbox.address import reply_address

    signed = reply_address("onboarding@northwind.example", "a-long-random-secret-for-tests",
                           w.ids["birch"])
    forged = f"onboarding+{w.ids['acme']}-0123456789abcdef@northwind.example"
    w.append(messages.unthreaded_reply(sender="assistant@birch.example", at=ny(9, 14), to=signed))
    w.append(messages.unthreaded_reply(sender="someone@acme-lookalike.example", at=ny(9, 14),
                                       to=forged))
    report = w.inbox(ny(9, 15))
    assert [(h.outcome, h.onboarding_id, h.matched_by) for h in report.handled] == [
        ("reply", w.ids["birch"], "reply_to"), ("ignored", None, None)]
    # Client mail sent from now on carries the signed Reply-To (Acme's reminder 3 on Friday:
    # two unanswered reminders slowed its cadence to 48 hours).
    w.sweep(ny(11, 11))
    eml = sorted(get_settings().outbox_dir.glob(f"missing_info_reminder_{w.ids['acme']}_3*.eml"))
    assert eml, sorted(p.name for p in get_settings().outbox_dir.iterdir())
    text = eml[-1].read_text()
    mine = reply_address("onboarding@northwind.example", "a-long-random-secret-for-tests",
                         w.ids["acme"])
    assert f"Reply-To: {mine}" in text


def test_owner_away_the_bounce_notice_goes_to_the_backup(lite: World) -> None:
    w = lite
    w.tx(lambda s: records.set_owner_away(s, OWNER, until=dt.date(2026, 12, 18), at=ny(8, 9),
                                          by="test", tz=NY))
    cedar = w.sent("cedar", "intake_request")[0]
    w.append(messages.postfix_bounce(bad_address=CLIENTS["cedar"], original_id=cedar.message_id,
                                     original_subject=cedar.subject, at=ny(7, 10, 31)))
    w.inbox(ny(9, 15))
    [failure] = w.sent("cedar", "delivery_failure")
    assert failure.recipients == BACKUP
    assert w.count(Event, kind="handover_to_backup", onboarding_id=w.ids["cedar"]) == 1


def test_dry_run_writes_nothing_and_unset_reads_nothing(lite: World,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    w = lite
    fill_mailbox(w)
    before = {m.__name__: w.count(m) for m in (InboundMessage, ClientResponse, Communication,
                                               Event, MailboxCursor)}
    report = w.inbox(ny(9, 15, 5), dry_run=True)
    assert Counter(h.outcome for h in report.handled) == Counter(
        {"auto_reply": 3, "reply": 1, "bounce": 1, "probable_reply": 1, "ignored": 1})
    after = {m.__name__: w.count(m) for m in (InboundMessage, ClientResponse, Communication,
                                              Event, MailboxCursor)}
    assert after == before
    monkeypatch.delenv("HANDOFF_IMAP_HOST")
    get_settings.cache_clear()
    assert w.inbox(ny(9, 15, 5)).as_dict() == {"skipped": NOT_CONFIGURED}


def closed_port() -> int:
    from tests.flow.conftest import free_port

    return free_port()


@pytest.mark.parametrize(("env", "message"), [
    ({"HANDOFF_IMAP_HOST": "imap.example.com"},
     "invalid settings: HANDOFF_IMAP_HOST is set: set HANDOFF_IMAP_USERNAME and "
     "HANDOFF_IMAP_PASSWORD too"),
    ({"HANDOFF_IMAP_HOST": "imap.example.com", "HANDOFF_IMAP_USERNAME": "u",
      "HANDOFF_IMAP_PASSWORD": "changeme"},
     "invalid settings: HANDOFF_IMAP_PASSWORD: a placeholder, not a real secret; set the real "
     "value"),
    ({"HANDOFF_IMAP_HOST": "imap.example.com", "HANDOFF_IMAP_USERNAME": "u",
      "HANDOFF_IMAP_PASSWORD": "pw-for-real", "HANDOFF_IMAP_SSL": "false"},
     "invalid settings: HANDOFF_IMAP_SSL and HANDOFF_IMAP_STARTTLS are both false; the mailbox "
     "is only read over TLS: enable one"),
    ({"HANDOFF_REPLY_TO": "onboarding@northwind.example"},
     "invalid settings: HANDOFF_REPLY_TO is set: set HANDOFF_SECRET_KEY too (it signs the reply "
     "addresses)"),
])
def test_a_bad_mailbox_setting_is_one_line_without_the_secret(
        home: object, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    from db.settings import SettingsError

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    with pytest.raises(SettingsError) as refused:
        get_settings()
    assert str(refused.value) == message
    assert "pw-for-real" not in str(refused.value)
