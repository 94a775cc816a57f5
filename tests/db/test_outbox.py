"""The outbox against a real SMTP server, on SQLite and PostgreSQL: nothing lost, nothing twice.

SMTP down, 4xx and 5xx each get a test; so do the retry budget, one connection per batch, a
crash mid-send, duplicate keys and two delivery passes racing for the same queue.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import Communication, Event, utcnow
from db.playbook import Playbook
from db.session import session_factory
from db.settings import get_settings
from tasks.comms.context import context
from tasks.comms.snapshot import Client
from tasks.mail.alarm import TransportAlarm, current_alarm, on_transport_alarm
from tasks.mail.delivery import (
    BACKOFF_MINUTES,
    MAX_ATTEMPTS,
    SENDING_LEASE,
    DeliveryReport,
    deliver,
)
from tasks.mail.outbox import (
    Draft,
    enqueue,
    enqueue_many,
)
from tasks.onboarding import records
from tests.factories import new_onboarding, statements_sent
from tests.smtp_server import LoopbackSmtp

NY = ZoneInfo("America/New_York")
NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=NY)  # a Tuesday, inside business hours
OWNER = "va@northwind.example"
BACKUP = "va2@northwind.example"
CONTACT = "pat@acme.example"




@pytest.fixture
def factory(db_url: str) -> sessionmaker[Session]:
    return session_factory(db_url)


@pytest.fixture
def ob_id(session: Session, playbook: Playbook) -> int:
    return new_onboarding(session, playbook)


def drafts(factory: sessionmaker[Session], playbook: Playbook, ob_id: int, n: int = 1,
           template: str = "welcome") -> list[Draft]:
    """n client messages for one onboarding, each under its own key, from its real row."""
    with factory() as session:
        client = Client(row=records.get_onboarding(session, ob_id))
        return [Draft(onboarding_id=ob_id, template=template, recipients=[CONTACT],
                      key=f"test:{ob_id}:{template}:{i}", context=context(playbook, client))
                for i in range(n)]


def queue(factory: sessionmaker[Session], playbook: Playbook, batch: list[Draft],
          now: dt.datetime = NOW) -> None:
    with factory() as session, session.begin():
        enqueue_many(session, playbook, batch, now=now)


def send(factory: sessionmaker[Session], playbook: Playbook, at: dt.datetime) -> DeliveryReport:
    return deliver(factory, playbook, get_settings(), now=at)


def rows(factory: sessionmaker[Session]) -> list[Communication]:
    with factory() as session:
        return list(session.scalars(select(Communication).order_by(Communication.id)))


def events(factory: sessionmaker[Session], kind: str) -> list[Event]:
    with factory() as session:
        return list(session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def counts(report: DeliveryReport) -> tuple[int, int, int, int]:
    return report.sent, report.retried, report.failed, report.uncertain


def minutes(n: int) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def test_smtp_down_queues_retries_with_backoff_and_delivers_once(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
        smtp: LoopbackSmtp) -> None:
    queue(factory, playbook, drafts(factory, playbook, ob_id, 2))
    smtp.stop()

    assert counts(send(factory, playbook, NOW)) == (0, 2, 0, 0)
    first = rows(factory)
    assert [(r.status, r.attempts, r.next_attempt_at) for r in first] == [
        ("queued", 1, NOW + minutes(5))] * 2
    assert all("connect failed" in (r.last_error or "") for r in first)

    assert counts(send(factory, playbook, NOW + minutes(4))) == (0, 0, 0, 0)  # backing off
    assert counts(send(factory, playbook, NOW + minutes(5))) == (0, 2, 0, 0)
    assert [(r.attempts, r.next_attempt_at) for r in rows(factory)] == [
        (2, NOW + minutes(20))] * 2

    smtp.start()
    assert counts(send(factory, playbook, NOW + minutes(19))) == (0, 0, 0, 0)
    assert counts(send(factory, playbook, NOW + minutes(20))) == (2, 0, 0, 0)
    assert counts(send(factory, playbook, NOW + minutes(90))) == (0, 0, 0, 0)

    assert [m.rcpt_tos for m in smtp.messages] == [(CONTACT,), (CONTACT,)]
    assert [(r.status, r.attempts, r.sent_at, r.last_error) for r in rows(factory)] == [
        ("sent", 3, NOW + minutes(20), None)] * 2
    assert len(events(factory, "message_retry")) == 4


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
def test_4xx_is_retried_then_delivered_once(factory: sessionmaker[Session], playbook: Playbook,
                                            ob_id: int, smtp: LoopbackSmtp, stage: str) -> None:
    queue(factory, playbook, drafts(factory, playbook, ob_id, 1))
    smtp.fail_next(451, stage=stage, count=2)  # type: ignore[arg-type]

    assert counts(send(factory, playbook, NOW)) == (0, 1, 0, 0)
    assert counts(send(factory, playbook, NOW + minutes(5))) == (0, 1, 0, 0)
    (row,) = rows(factory)
    assert (row.status, row.attempts, row.next_attempt_at) == ("queued", 2, NOW + minutes(20))
    assert "451" in (row.last_error or "")
    assert smtp.messages == []

    assert counts(send(factory, playbook, NOW + minutes(20))) == (1, 0, 0, 0)
    assert counts(send(factory, playbook, NOW + minutes(60))) == (0, 0, 0, 0)
    assert len(smtp.messages) == 1
    (row,) = rows(factory)
    assert (row.status, row.attempts, row.last_error) == ("sent", 3, None)


def test_5xx_fails_and_the_owner_is_told(factory: sessionmaker[Session], playbook: Playbook,
                                         ob_id: int, smtp: LoopbackSmtp) -> None:
    queue(factory, playbook, drafts(factory, playbook, ob_id, 1))
    smtp.fail_next(550, stage="RCPT", text="mailbox unavailable")

    assert counts(send(factory, playbook, NOW)) == (0, 0, 1, 0)
    welcome, notice = rows(factory)
    assert (welcome.status, welcome.attempts) == ("failed", 1)
    assert "550 mailbox unavailable" in (welcome.last_error or "")
    assert (notice.template, notice.status, notice.recipients, notice.idempotency_key) == (
        "delivery_failure", "queued", OWNER, f"delivery-failure:test:{ob_id}:welcome:0")
    assert "A message was refused" in notice.body_text
    assert "550 mailbox unavailable" in notice.body_text

    assert counts(send(factory, playbook, NOW + minutes(1))) == (1, 0, 0, 0)
    assert counts(send(factory, playbook, NOW + dt.timedelta(days=1))) == (0, 0, 0, 0)
    assert [(str(m.message["Subject"]), m.rcpt_tos) for m in smtp.messages] == [
        (f"Undeliverable: welcome to {CONTACT}", (OWNER,))]
    assert [r.status for r in rows(factory)] == ["failed", "sent"]


def test_5xx_notice_goes_to_the_backup_while_the_owner_is_away(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
        smtp: LoopbackSmtp) -> None:
    with factory() as session, session.begin():
        records.set_owner_away(session, OWNER, until=NOW.date(), at=NOW - minutes(60), by=OWNER,
                               tz=playbook.calendar.tz)
        # A client in Tokyo: 21:00 in New York is inside their working hours (client mail goes
        # out only inside its send window).
        records.get_onboarding(session, ob_id).client_tz = "Asia/Tokyo"
    queue(factory, playbook, drafts(factory, playbook, ob_id, 1))
    smtp.fail_next(554, stage="DATA")
    # 21:00 in New York is already the next day in UTC (sweeps pass UTC instants): the owner
    # is away until midnight New York time, so the backup still covers.
    late = NOW.replace(hour=21).astimezone(dt.UTC)
    assert late.date() > NOW.date()

    assert counts(send(factory, playbook, late)) == (0, 0, 1, 0)
    assert counts(send(factory, playbook, late + minutes(1))) == (1, 0, 0, 0)
    assert [m.rcpt_tos for m in smtp.messages] == [(BACKUP,)]
    assert [e.detail["to"] for e in events(factory, "handover_to_backup")] == [BACKUP]


def test_transient_failures_past_the_retry_budget_fail_and_escalate(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
        smtp: LoopbackSmtp) -> None:
    queue(factory, playbook, drafts(factory, playbook, ob_id, 1))
    with factory() as session, session.begin():  # a team message: no business-hours window
        session.execute(update(Communication).values(audience="team"))
    smtp.fail_next(421, stage="MAIL", count=MAX_ATTEMPTS)

    at, schedule = NOW, []
    for attempt in range(1, MAX_ATTEMPTS):
        assert counts(send(factory, playbook, at)) == (0, 1, 0, 0), attempt
        (row,) = rows(factory)
        schedule.append(int((row.next_attempt_at - at).total_seconds() // 60))
        assert counts(send(factory, playbook, row.next_attempt_at - minutes(1))) == (0, 0, 0, 0)
        at = row.next_attempt_at
    assert schedule == list(BACKOFF_MINUTES) == [5, 15, 45, 120, 360]

    assert counts(send(factory, playbook, at)) == (0, 0, 1, 0)  # attempt MAX_ATTEMPTS
    message, notice = rows(factory)
    assert (message.status, message.attempts) == ("failed", MAX_ATTEMPTS)
    assert "421" in (message.last_error or "")
    assert (notice.template, notice.recipients) == ("delivery_failure", OWNER)
    assert f"gave up after {MAX_ATTEMPTS} attempts" in notice.body_text

    assert counts(send(factory, playbook, at + minutes(1))) == (1, 0, 0, 0)
    assert counts(send(factory, playbook, at + dt.timedelta(days=2))) == (0, 0, 0, 0)
    assert [m.rcpt_tos for m in smtp.messages] == [(OWNER,)]  # the notice; never the message


def test_one_connection_carries_a_whole_batch(factory: sessionmaker[Session],
                                              playbook: Playbook, ob_id: int,
                                              smtp: LoopbackSmtp) -> None:
    queue(factory, playbook, drafts(factory, playbook, ob_id, 25))

    assert counts(send(factory, playbook, NOW)) == (25, 0, 0, 0)
    assert smtp.count_connections == 1
    assert len(smtp.messages) == 25
    # Identical subjects, yet each message has its own Message-ID (a yagmail trap).
    ids = {str(m.message["Message-ID"]) for m in smtp.messages}
    assert len(ids) == 25
    assert ids == {r.message_id for r in rows(factory)}


def test_a_crash_mid_send_leaves_uncertain_never_resent_and_the_owner_told(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
        smtp: LoopbackSmtp) -> None:
    queue(factory, playbook, drafts(factory, playbook, ob_id, 2))
    crashed, in_flight = (r.id for r in rows(factory))
    with factory() as session, session.begin():
        # A pass claimed both, then died: one long ago, one a minute ago (maybe still sending).
        for row_id, claimed in ((crashed, utcnow() - SENDING_LEASE - minutes(1)),
                                (in_flight, utcnow() - minutes(1))):
            session.execute(update(Communication).where(Communication.id == row_id).values(
                status="sending", attempts=1, claimed_by="dead-pass", claimed_at=claimed))

    report = send(factory, playbook, NOW)
    assert counts(report) == (1, 0, 0, 1)  # the notice went out; the orphan did not
    by_id = {r.id: r for r in rows(factory)}
    assert (by_id[crashed].status, by_id[crashed].sent_at) == ("uncertain", None)
    assert by_id[in_flight].status == "sending"  # not ours to judge yet
    (notice,) = [r for r in by_id.values() if r.template == "delivery_failure"]
    assert (notice.recipients, notice.status) == (OWNER, "sent")
    assert "may not have been delivered" in notice.body_text
    assert "NOT be re-sent automatically" in notice.body_text

    assert counts(send(factory, playbook, NOW + dt.timedelta(hours=2))) == (0, 0, 0, 0)
    assert [(str(m.message["Subject"]), m.rcpt_tos) for m in smtp.messages] == [
        (f"Undeliverable: welcome to {CONTACT}", (OWNER,))]
    assert len(events(factory, "message_uncertain")) == 1


def test_the_same_key_is_queued_once(factory: sessionmaker[Session], playbook: Playbook,
                                     ob_id: int, smtp: LoopbackSmtp) -> None:
    first, second = drafts(factory, playbook, ob_id, 2)
    with factory() as session, session.begin():
        row, created = enqueue(session, playbook, first, now=NOW)
        assert created
        first_id = row.id
    with factory() as session, session.begin():
        row, created = enqueue(session, playbook, first, now=NOW + minutes(5))
        assert (row.id, created) == (first_id, False)
    with factory() as session, session.begin():
        # A batch repeating a queued key, and a key twice within itself: only `second` is new.
        added = enqueue_many(session, playbook, [first, second, second], now=NOW)
        assert added == [second.key]

    assert [r.idempotency_key for r in rows(factory)] == [first.key, second.key]
    assert counts(send(factory, playbook, NOW)) == (2, 0, 0, 0)
    assert len(smtp.messages) == 2


def test_two_racing_enqueues_of_one_key_make_one_row(factory: sessionmaker[Session],
                                                     playbook: Playbook, ob_id: int,
                                                     smtp: LoopbackSmtp) -> None:
    (draft,) = drafts(factory, playbook, ob_id, 1)
    start = threading.Barrier(2)
    results: list[bool] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with factory() as session, session.begin():
                start.wait(5)
                _row, created = enqueue(session, playbook, draft, now=NOW)
                results.append(created)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(results) == [False, True]
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Communication)) == 1


def test_two_concurrent_deliveries_send_each_message_once(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
        smtp: LoopbackSmtp) -> None:
    queue(factory, playbook, drafts(factory, playbook, ob_id, 40))
    smtp.data_delay = 0.01  # keep both passes busy at the same time
    start = threading.Barrier(2)
    sent: list[int] = [0, 0]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            start.wait(5)
            while True:  # small batches, so the two passes interleave their claims
                report = deliver(factory, playbook, get_settings(), now=NOW, limit=5)
                if not report.sent:
                    return
                sent[index] += report.sent
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sum(sent) == 40
    ids = [str(m.message["Message-ID"]) for m in smtp.messages]
    assert len(ids) == len(set(ids)) == 40
    assert {(r.status, r.attempts) for r in rows(factory)} == {("sent", 1)}


def queue_numbered(factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
                   count: int) -> None:
    """`count` messages queued, to c0@example.org, c1@example.org, ... in that order."""
    queue(factory, playbook, [replace(d, recipients=[f"c{i}@example.org"])
                              for i, d in enumerate(drafts(factory, playbook, ob_id, count))])


def test_a_pipelined_batch_records_each_result_before_the_next_message_goes_out(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
        smtp: LoopbackSmtp) -> None:
    # One pass, six messages on a pipelining server: c1 refused at RCPT, c2 refused after its
    # final dot, c3 taken by the server whose 250 never arrives (the connection dies with c4's
    # envelope behind c3's dot), c5 on a reopened connection.
    queue_numbered(factory, playbook, ob_id, 6)
    smtp.refuse_recipients = {"c1@example.org": 550}
    smtp.refuse_content = {"c2@example.org": 554}
    smtp.drop_after_dot_to = {"c3@example.org"}
    at_dot: dict[str, dict[str, str]] = {}

    def statuses(envelope: Any) -> None:  # the server thread, as each message's content ends
        with factory() as session:
            at_dot[envelope.rcpt_tos[0]] = dict(session.execute(
                select(Communication.recipients, Communication.status)).tuples().all())

    smtp.on_content = statuses
    report = send(factory, playbook, NOW)
    assert counts(report) == (2, 1, 2, 1)
    by_rcpt = {r.recipients: r for r in rows(factory) if r.template == "welcome"}
    assert [(by_rcpt[f"c{i}@example.org"].status, by_rcpt[f"c{i}@example.org"].attempts)
            for i in range(6)] == [("sent", 1), ("failed", 1), ("failed", 1), ("uncertain", 1),
                                   ("queued", 1), ("sent", 1)]
    assert by_rcpt["c4@example.org"].next_attempt_at == NOW + minutes(5)
    assert "RCPT TO refused: 550" in (by_rcpt["c1@example.org"].last_error or "")
    assert "message refused: 554" in (by_rcpt["c2@example.org"].last_error or "")
    assert [m.rcpt_tos for m in smtp.messages] == [(f"c{i}@example.org",) for i in (0, 3, 5)]
    assert smtp.count_connections == 2
    assert smtp.commands_after_dot == 3  # c0's dot carried c1's envelope, c2's c3's, c3's c4's
    # When the server read each message, every message before it was already recorded.
    assert sorted(at_dot) == [f"c{i}@example.org" for i in (0, 2, 3, 5)]
    for i in (0, 2, 3, 5):
        earlier = {f"c{j}@example.org" for j in range(i)}
        assert {rcpt: status for rcpt, status in at_dot[f"c{i}@example.org"].items()
                if rcpt in earlier} == {rcpt: by_rcpt[rcpt].status for rcpt in earlier}, i

    # c4 goes out with the next pass, once; the owner is told of c1, c2 and c3; c3 never again.
    assert counts(send(factory, playbook, NOW + minutes(5))) == (4, 0, 0, 0)
    assert [m.rcpt_tos for m in smtp.messages].count(("c4@example.org",)) == 1
    assert [m.rcpt_tos for m in smtp.messages].count(("c3@example.org",)) == 1
    assert [m.rcpt_tos for m in smtp.messages].count((OWNER,)) == 3


def test_a_pass_reads_in_a_fixed_number_of_statements(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int, smtp: LoopbackSmtp,
        db_url: str) -> None:
    # Each message costs its own writes (its row, its event: one transaction) and no read:
    # the rows claimed are written back as they were loaded.
    batch = drafts(factory, playbook, ob_id, 10)
    queue(factory, playbook, batch[:2])
    with statements_sent(db_url) as two:
        assert counts(send(factory, playbook, NOW)) == (2, 0, 0, 0)
    queue(factory, playbook, batch[2:])
    with statements_sent(db_url) as eight:
        assert counts(send(factory, playbook, NOW)) == (8, 0, 0, 0)

    def reads(sent: list[str]) -> list[str]:
        return [s for s in sent if s.lstrip().upper().startswith("SELECT")]

    assert len(reads(eight)) == len(reads(two)), "\n".join(reads(eight))
    assert (len(eight) - len(two)) % 6 == 0 and len(eight) > len(two)


def test_a_server_without_pipelining_gets_the_batch_one_step_at_a_time(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
        smtp: LoopbackSmtp) -> None:
    queue_numbered(factory, playbook, ob_id, 4)
    smtp.offer_pipelining = False
    smtp.refuse_content = {"c1@example.org": 554}
    smtp.drop_after_dot_to = {"c2@example.org"}

    assert counts(send(factory, playbook, NOW)) == (2, 0, 1, 1)
    by_rcpt = {r.recipients: r.status for r in rows(factory) if r.template == "welcome"}
    assert [by_rcpt[f"c{i}@example.org"] for i in range(4)] == [
        "sent", "failed", "uncertain", "sent"]
    assert [m.rcpt_tos for m in smtp.messages] == [(f"c{i}@example.org",) for i in (0, 2, 3)]
    assert (smtp.commands_after_dot, smtp.count_connections, smtp.rsets) == (0, 2, 1)


# -- what is known after DATA decides: uncertain, RSET, business hours, the transport alarm ----


def test_no_reply_after_the_final_dot_is_uncertain_never_resent_and_the_owner_told(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
        smtp: LoopbackSmtp) -> None:
    queue(factory, playbook, drafts(factory, playbook, ob_id, 1))
    smtp.drop_after_dot = 1  # the server takes the message; its 250 never reaches us

    assert counts(send(factory, playbook, NOW)) == (0, 0, 0, 1)
    assert counts(send(factory, playbook, NOW + minutes(1))) == (1, 0, 0, 0)  # the notice
    welcome, notice = rows(factory)
    assert (welcome.status, welcome.attempts, welcome.sent_at) == ("uncertain", 1, None)
    assert (notice.template, notice.recipients, notice.status) == (
        "delivery_failure", OWNER, "sent")
    assert "may not have been delivered" in notice.body_text
    assert "no reply after the message was handed over" in notice.body_text
    for later in (minutes(5), minutes(60), dt.timedelta(days=1)):
        assert counts(send(factory, playbook, NOW + later)) == (0, 0, 0, 0)
    welcome_ids = [m.message["Message-ID"] for m in smtp.messages if m.rcpt_tos == (CONTACT,)]
    assert len(welcome_ids) == 1  # received once, never re-sent
    assert len(events(factory, "message_uncertain")) == 1


def test_a_refused_data_command_is_reset_and_the_next_message_goes_out(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
        smtp: LoopbackSmtp) -> None:
    # The server answers 451 to DATA and keeps the transaction open; without RSET the next
    # message's MAIL gets "503 nested MAIL command" and fails for good.
    queue(factory, playbook, drafts(factory, playbook, ob_id, 2))
    smtp.fail_next(451, stage="DATA_CMD", count=1)

    assert counts(send(factory, playbook, NOW)) == (1, 1, 0, 0)
    first, second = rows(factory)
    assert (first.status, second.status) == ("queued", "sent")
    assert smtp.rsets == 1
    assert counts(send(factory, playbook, NOW + minutes(5))) == (1, 0, 0, 0)
    assert [r.status for r in rows(factory)] == ["sent", "sent"]  # no owner notice either
    assert len(smtp.messages) == 2


def test_a_client_retry_waits_for_business_hours(factory: sessionmaker[Session],
                                                 playbook: Playbook, ob_id: int,
                                                 smtp: LoopbackSmtp) -> None:
    late = NOW.replace(hour=16, minute=58)  # a 5-minute backoff would land at 17:03
    client_draft, team_draft = drafts(factory, playbook, ob_id, 2)
    queue(factory, playbook, [client_draft, team_draft], now=late)
    with factory() as session, session.begin():
        session.execute(update(Communication).where(
            Communication.idempotency_key == team_draft.key).values(audience="team"))
    smtp.fail_next(451, stage="MAIL", count=2)

    assert counts(send(factory, playbook, late)) == (0, 2, 0, 0)
    client_row, team_row = rows(factory)
    assert client_row.next_attempt_at == dt.datetime(2026, 11, 25, 9, 0, tzinfo=NY)
    assert team_row.next_attempt_at == late + minutes(5)
    assert counts(send(factory, playbook, late + minutes(7))) == (1, 0, 0, 0)  # 17:05: team
    assert counts(send(factory, playbook, dt.datetime(2026, 11, 25, 9, 0, tzinfo=NY))) == (
        1, 0, 0, 0)
    assert [m.rcpt_tos for m in smtp.messages] == [(CONTACT,), (CONTACT,)]


@pytest.fixture
def alarms() -> Iterator[list[TransportAlarm | None]]:
    """What the transport alarm hook was told, in order."""
    seen: list[TransportAlarm | None] = []
    from tasks.mail import alarm

    on_transport_alarm(seen.append)
    yield seen
    alarm._hooks.remove(seen.append)


def test_auth_failure_holds_mail_raises_one_alarm_outside_mail_and_clears(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        alarms: list[TransportAlarm | None]) -> None:
    queue(factory, playbook, drafts(factory, playbook, ob_id, 2))
    with LoopbackSmtp(username="mailer", password="right") as server:
        for name, value in (("HOST", server.host), ("PORT", str(server.port)),
                            ("STARTTLS", "false"), ("USERNAME", "mailer"),
                            ("PASSWORD", "expired")):
            monkeypatch.setenv(f"HANDOFF_SMTP_{name}", value)
        get_settings.cache_clear()
        with caplog.at_level(logging.ERROR, logger="handoff.mail"):
            # Every pass (inside the clients' hours): one login, nothing spent, no new alarm.
            for later in (0, 5, 60, 300):
                assert send(factory, playbook, NOW + minutes(later)).held == 2
        assert [(r.status, r.attempts) for r in rows(factory)] == [("queued", 0)] * 2
        assert len(rows(factory)) == 2  # no "undeliverable" notice over the failing server
        assert server.count_connections == 4 and server.messages == []
        (raised,) = events(factory, "transport_alarm")
        assert raised.detail["fault"] == "auth" and "535" in raised.detail["detail"]
        assert "expired" not in raised.detail["detail"]
        (record,) = [r for r in caplog.records if "MAIL IS NOT GOING OUT" in r.getMessage()]
        assert record.levelno == logging.ERROR
        with factory() as session:
            alarm = current_alarm(session)
        assert alarm is not None and alarm.fault == "auth"
        assert [a.fault if a else None for a in alarms] == ["auth"]

        monkeypatch.setenv("HANDOFF_SMTP_PASSWORD", "right")
        get_settings.cache_clear()
        assert counts(send(factory, playbook, NOW + minutes(301))) == (2, 0, 0, 0)
    assert [(r.status, r.attempts) for r in rows(factory)] == [("sent", 1)] * 2
    assert len(events(factory, "transport_alarm_cleared")) == 1
    with factory() as session:
        assert current_alarm(session) is None
    assert [a.fault if a else None for a in alarms] == ["auth", None]


def test_no_greeting_costs_one_short_timeout_per_pass_not_per_message(
        factory: sessionmaker[Session], playbook: Playbook, ob_id: int, smtp: LoopbackSmtp,
        monkeypatch: pytest.MonkeyPatch) -> None:
    queue(factory, playbook, drafts(factory, playbook, ob_id, 10))
    monkeypatch.setenv("HANDOFF_SMTP_CONNECT_TIMEOUT", "0.5")
    get_settings.cache_clear()
    smtp.greeting_delay = 5.0

    assert counts(send(factory, playbook, NOW)) == (0, 10, 0, 0)
    assert smtp.count_connections == 1  # one wait for the whole pass
    assert all("timed out" in (r.last_error or "") for r in rows(factory))
    (raised,) = events(factory, "transport_alarm")
    assert raised.detail["fault"] == "unreachable"

    smtp.greeting_delay = 0.0
    assert counts(send(factory, playbook, NOW + minutes(5))) == (10, 0, 0, 0)
    assert len(events(factory, "transport_alarm_cleared")) == 1
