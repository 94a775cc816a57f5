"""A simulated fortnight of sweeps against a real SMTP server, on SQLite and PostgreSQL.

The story: a deal closes on Friday 2026-09-04 at 16:40 New York time, the Friday before Labor
Day (Monday 2026-09-07, a US public holiday in the shipped playbook's calendar). The client never
answers. The mail server is down on Tuesday morning. A critical internal dependency blocks the
work from Tuesday to the following Monday. The owner is away the second week. The founder finally
gets the intake on the phone on Tuesday 2026-09-15, the kickoff is held on Friday 2026-09-18.

Sweeps run when the deployments run them in business hours (deployments/serve.py): the reminder
sweep at :00 and the escalation sweep at :15, 08:00-18:00 Monday to Friday, New York time. The cron does
not know about holidays, so both run on Labor Day too. Every sweep runs twice at the same
`as_of`; the second run must queue and send nothing.

Every expected instant below is derived by hand from the calendar (09:00-17:00 Mon-Fri,
America/New_York, EDT = UTC-4 throughout, Labor Day closed) and written as a literal:

* welcome: 4 business hours from Fri 16:40 = 20 min on Friday + 3 h 40 on Tuesday (Monday is a
  holiday) = Tue 09-08 12:40. Queued by the Fri 17:00 sweep for the next send window, Tue 09:00.
  SMTP is down 08:30-12:30 Tuesday: attempt 1 at 09:00, backoff 5 min -> attempt 2 at the 09:15
  sweep, +15 min -> attempt 3 at 10:00, +45 min -> attempt 4 at 11:00, +120 min -> attempt 5 at
  13:00, sent: 20 business minutes late.
* intake request: queued with the welcome (the VA moved the client to intake at 16:50), same
  fate, sent Tue 13:00.
* intake reminders, every 24-48 clock hours after the previous message, only in business hours:
  Wed 09-09 13:00 (due Thu 13:00), Thu 09-10 13:00 (due Fri 13:00). The second is the
  playbook's no_response_after_reminder_cycles (2) unanswered, so from it the cadence slows
  (`at_escalation: slow`: 48-96 h): the third is eligible Sat 09-12 13:00, queued by the first
  Monday sweep (08:00) for 09:00, due Mon 09-14 13:00 -> 0 business minutes late; the fourth
  would be eligible Wed 09:00, but the VA records the intake at Tue 10:00.
* critical internal_dependency_delay blocker opened Tue 09-08 10:30. Its own path: owner after
  4 business hours (Tue 14:30 -> sweep 15:15), backup after 1 business day (Wed 10:30 -> 11:15),
  founder after 2 (Thu 10:30 -> 11:15). The "critical dependency over 48 clock hours" threshold
  crosses Thu 09-10 10:30: owner at once (Thu 11:15), backup +1 business day (Fri 10:30 ->
  11:15), founder +2 (Mon 09-14 10:30 -> 11:15). Resolved Mon 15:00.
* no response after 2 reminder cycles: the 2nd reminder went Thu 13:00, its 48 h window ends
  Sat 09-12 13:00; the owner rung is due at the next opening, Mon 09:00 (sweep 09:15), the backup
  rung 1 business day later, Mon 17:00 (sweep 17:15). The owner is away from Sunday evening, so
  the owner rung goes to the backup and a handover is logged. The founder rung (Tue 17:00) never
  fires: the client left intake at Tue 10:00.
* kickoff alignment entered Tue 09-15 10:00, kickoff scheduled 11:30 for Fri 09-18 14:00: the
  confirmation goes at the 12:00 sweep, due 2 business days after entering, Thu 09-17 10:00.
* kickoff held 14:00-14:45, recorded Fri 09-18 14:50: recap due 24 clock hours later, Sat
  14:50, sent at the 15:00 sweep.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Communication, Event
from db.playbook import Playbook
from db.session import session_factory
from db.settings import get_settings
from tasks.comms.sweeps import run_sweep
from tasks.onboarding import records
from tests.smtp_server import LoopbackSmtp

NY = ZoneInfo("America/New_York")
CLIENT = "Harbor & Finch <Dental>"
CONTACT = "dana@harborfinch.example"
OWNER = "va@northwind.example"
BACKUP = "va2@northwind.example"
FOUNDER = "founder@northwind.example"
VA = "Vera VA"


def ny(month: int, day: int, hour: int, minute: int = 0) -> dt.datetime:
    """A wall-clock instant in New York, September 2026 unless told otherwise."""
    return dt.datetime(2026, month, day, hour, minute, tzinfo=NY)


def cron_instants(first: dt.date, last: dt.date) -> list[tuple[dt.datetime, str]]:
    """deployments/serve.py's schedules through the business day: reminders at :00 (they also
    run at night and at weekends, for clients in other timezones; a client in the business's
    own timezone gets nothing then), escalations at :15, 08:00-18:00 Mon-Fri."""
    out = []
    day = first
    while day <= last:
        if day.isoweekday() <= 5:
            for hour in range(8, 19):
                out.append((dt.datetime.combine(day, dt.time(hour, 0), NY), "reminders"))
                out.append((dt.datetime.combine(day, dt.time(hour, 15), NY), "escalations"))
        day += dt.timedelta(days=1)
    return out




class Fortnight:
    """The scenario's actors: the VA and founder act through the service layer only."""

    def __init__(self, factory: sessionmaker[Session], playbook: Playbook,
                 smtp: LoopbackSmtp) -> None:
        self.factory, self.playbook, self.smtp = factory, playbook, smtp
        self.onboarding_id = 0
        self.blocker_id = 0
        self.arrivals: list[tuple[dt.datetime, str, tuple[str, ...]]] = []

    def tx(self, action: Callable[[Session], object]) -> None:
        with self.factory() as session, session.begin():
            action(session)

    def close_deal(self) -> None:
        new = records.NewOnboarding.parse(
            client=CLIENT, segment="smb", offer="Growth retainer", owner=OWNER, backup=BACKUP,
            contacts=CONTACT, closed_at=ny(9, 4, 16, 40), kickoff_by=dt.date(2026, 9, 18),
            first_milestone=dt.date(2026, 10, 2))
        with self.factory() as session, session.begin():
            self.onboarding_id = records.create_onboarding(session, self.playbook, new,
                                                           actor=VA).id

    def complete_stage(self, at: dt.datetime) -> None:
        """Record what the current stage needs, then advance, as a VA would."""
        def act(session: Session) -> None:
            for key in records.missing_items(session, self.playbook,
                                             records.get_onboarding(session, self.onboarding_id)):
                records.record_artifact(session, self.playbook, self.onboarding_id, key, by=VA,
                                        at=at)
            records.advance(session, self.playbook, self.onboarding_id, actor=VA, at=at)
        self.tx(act)

    def open_blocker(self, at: dt.datetime) -> None:
        def act(session: Session) -> None:
            self.blocker_id = records.open_blocker(
                session, self.playbook, self.onboarding_id, "internal_dependency_delay",
                critical=True, note="Design team has not delivered the brand kit", by=VA,
                at=at).id
        self.tx(act)

    def sweep(self, at: dt.datetime, which: str) -> None:
        """Run the scheduled sweep, then the same sweep again: the rerun must do nothing."""
        settings = get_settings()
        before = len(self.smtp.messages)
        first = run_sweep(self.factory, self.playbook, settings, at,
                          messages=which == "reminders", escalations=which == "escalations")
        arrived = self.smtp.messages[before:]
        again = run_sweep(self.factory, self.playbook, settings, at,
                          messages=which == "reminders", escalations=which == "escalations")
        assert (again.queued_messages, again.queued_escalations, again.sent, again.retried,
                again.failed, again.uncertain) == (0, 0, 0, 0, 0, 0), (at, which, again)
        assert len(self.smtp.messages) == before + len(arrived), f"rerun at {at} sent mail"
        assert first.sent == len(arrived), (at, first, arrived)
        for message in arrived:
            self.arrivals.append((at, str(message.message["Subject"]), message.rcpt_tos))


def run_fortnight(f: Fortnight) -> None:
    p = f.playbook
    actions: list[tuple[dt.datetime, Callable[[], None]]] = [
        (ny(9, 4, 16, 40), f.close_deal),
        (ny(9, 4, 16, 50), lambda: f.complete_stage(ny(9, 4, 16, 50))),
        (ny(9, 8, 8, 30), f.smtp.stop),
        (ny(9, 8, 10, 30), lambda: f.open_blocker(ny(9, 8, 10, 30))),
        (ny(9, 8, 12, 30), f.smtp.start),
        (ny(9, 13, 20, 0), lambda: f.tx(lambda s: records.set_owner_away(
            s, OWNER, until=dt.date(2026, 9, 18), at=ny(9, 13, 20), by=OWNER,
            tz=p.calendar.tz))),
        (ny(9, 14, 15, 0), lambda: f.tx(lambda s: records.resolve_blocker(
            s, p, f.blocker_id, by=VA, at=ny(9, 14, 15), note="Brand kit delivered"))),
        (ny(9, 15, 10, 0), lambda: f.complete_stage(ny(9, 15, 10))),
        (ny(9, 15, 11, 30), lambda: f.tx(lambda s: records.schedule_kickoff(
            s, p, f.onboarding_id, kickoff_at=ny(9, 18, 14), by=BACKUP, at=ny(9, 15, 11, 30)))),
        (ny(9, 18, 14, 50), lambda: f.tx(lambda s: records.record_artifact(
            s, p, f.onboarding_id, "kickoff_call_held", by=BACKUP, at=ny(9, 18, 14, 50)))),
    ]
    sweeps = [(at, which) for at, which in cron_instants(dt.date(2026, 9, 4),
                                                         dt.date(2026, 9, 18))
              if at > ny(9, 4, 16, 50)]
    timeline: list[tuple[dt.datetime, int, Callable[[], None]]] = [
        (at, 0, action) for at, action in actions]
    timeline += [(at, 1, (lambda at=at, which=which: f.sweep(at, which))) for at, which in sweeps]
    for _at, _order, step in sorted(timeline, key=lambda t: (t[0], t[1])):
        step()


# (sweep instant, subject, recipient): exactly what the SMTP server received, in order.
SUBJECT_BLOCKER = "Internal dependency delay blocking Harbor & Finch <Dental> for "
EXPECTED_ARRIVALS = [
    (ny(9, 8, 13), "Welcome to Northwind Studio, Harbor & Finch <Dental>: your next steps",
     CONTACT),
    (ny(9, 8, 13), "Harbor & Finch <Dental>: what we need from you to get started", CONTACT),
    (ny(9, 8, 15, 15), "[level 1 of 3] " + SUBJECT_BLOCKER + "5 hours", OWNER),
    (ny(9, 9, 11, 15), "[level 2 of 3] " + SUBJECT_BLOCKER + "25 hours", BACKUP),
    (ny(9, 9, 13), "Reminder 1: 3 items still needed for Harbor & Finch <Dental>", CONTACT),
    (ny(9, 10, 11, 15), "[level 3 of 3] " + SUBJECT_BLOCKER + "2.0 days", FOUNDER),
    (ny(9, 10, 11, 15), "[level 1 of 3] Critical dependency unresolved over 48 hours: "
                        "Harbor & Finch <Dental>", OWNER),
    (ny(9, 10, 13), "Reminder 2: 3 items still needed for Harbor & Finch <Dental>", CONTACT),
    (ny(9, 11, 11, 15), "[level 2 of 3] Critical dependency unresolved over 48 hours: "
                        "Harbor & Finch <Dental>", BACKUP),
    (ny(9, 14, 9), "Reminder 3: 3 items still needed for Harbor & Finch <Dental>", CONTACT),
    (ny(9, 14, 9, 15), "[level 1 of 3] No response after 2 reminder cycles: "
                       "Harbor & Finch <Dental>", BACKUP),
    (ny(9, 14, 11, 15), "[level 3 of 3] Critical dependency unresolved over 48 hours: "
                        "Harbor & Finch <Dental>", FOUNDER),
    (ny(9, 14, 17, 15), "[level 2 of 3] No response after 2 reminder cycles: "
                        "Harbor & Finch <Dental>", BACKUP),
    (ny(9, 15, 12), "Kickoff confirmed: Fri 18 Sep 2026, 14:00 EDT", CONTACT),
    (ny(9, 18, 15), "Kickoff recap and what happens next for Harbor & Finch <Dental>", CONTACT),
]

# (template, cycle, recipient, due_at, sent_at, late_business_minutes, attempts), in id order.
EXPECTED_ROWS = [
    ("welcome", 0, CONTACT, ny(9, 8, 12, 40), ny(9, 8, 13), 20, 5),
    ("intake_request", 0, CONTACT, None, ny(9, 8, 13), None, 5),
    ("blocker_internal_dependency_delay", 0, OWNER, ny(9, 8, 14, 30), ny(9, 8, 15, 15), 45, 1),
    ("blocker_internal_dependency_delay", 0, BACKUP, ny(9, 9, 10, 30), ny(9, 9, 11, 15), 45, 1),
    ("missing_info_reminder", 1, CONTACT, ny(9, 10, 13), ny(9, 9, 13), 0, 1),
    ("blocker_internal_dependency_delay", 0, FOUNDER, ny(9, 10, 10, 30), ny(9, 10, 11, 15), 45,
     1),
    ("threshold_escalation", 0, OWNER, ny(9, 10, 10, 30), ny(9, 10, 11, 15), 45, 1),
    ("missing_info_reminder", 2, CONTACT, ny(9, 11, 13), ny(9, 10, 13), 0, 1),
    ("threshold_escalation", 0, BACKUP, ny(9, 11, 10, 30), ny(9, 11, 11, 15), 45, 1),
    ("missing_info_reminder", 3, CONTACT, ny(9, 14, 13), ny(9, 14, 9), 0, 1),
    ("threshold_escalation", 0, BACKUP, ny(9, 14, 9), ny(9, 14, 9, 15), 15, 1),
    ("threshold_escalation", 0, FOUNDER, ny(9, 14, 10, 30), ny(9, 14, 11, 15), 45, 1),
    ("threshold_escalation", 0, BACKUP, ny(9, 14, 17), ny(9, 14, 17, 15), 0, 1),
    ("kickoff_confirmation", 0, CONTACT, ny(9, 17, 10), ny(9, 15, 12), 0, 1),
    ("kickoff_recap", 0, CONTACT, ny(9, 19, 14, 50), ny(9, 18, 15), 0, 1),
]


def test_a_fortnight_of_sweeps(db_url: str, smtp: LoopbackSmtp, playbook: Playbook) -> None:
    factory = session_factory(db_url)
    fortnight = Fortnight(factory, playbook, smtp)
    run_fortnight(fortnight)
    ob_id = fortnight.onboarding_id

    assert [(at, subject, rcpts) for at, subject, rcpts in fortnight.arrivals] == [
        (at, subject, (to,)) for at, subject, to in EXPECTED_ARRIVALS]

    with factory() as session:
        rows = list(session.scalars(select(Communication).order_by(Communication.id)))
        events = list(session.scalars(select(Event).order_by(Event.id)))
    assert [(r.template, r.cycle, r.recipients, r.due_at, r.sent_at, r.late_business_minutes,
             r.attempts) for r in rows] == EXPECTED_ROWS
    assert {r.status for r in rows} == {"sent"}
    assert all(r.onboarding_id == ob_id for r in rows)

    # The SLA keys say which promise each client message kept.
    assert [(r.template, r.sla_key) for r in rows if r.audience == "client"] == [
        ("welcome", "welcome"), ("intake_request", None),
        *[("missing_info_reminder", "intake_reminder")] * 3,
        ("kickoff_confirmation", "kickoff_scheduled"), ("kickoff_recap", "kickoff_recap")]
    reminders = [r for r in rows if r.template == "missing_info_reminder"]
    assert {r.sla_key for r in reminders} == {"intake_reminder"}

    # While the owner was away the client was told the backup owns the next step.
    by_cycle = {r.cycle: r for r in reminders}
    assert f"Your owner:  {OWNER}\n" in by_cycle[2].body_text
    assert f"Your owner:  {BACKUP}\n" in by_cycle[3].body_text
    assert OWNER not in by_cycle[3].body_text and BACKUP not in by_cycle[2].body_text

    # Retries were recorded on the way: four transient failures, then the send.
    retries = [e for e in events if e.kind == "message_retry"]
    assert [(e.at, e.detail["template"], e.detail["attempts"]) for e in retries] == [
        (ny(9, 8, 9), "welcome", 1), (ny(9, 8, 9), "intake_request", 1),
        (ny(9, 8, 9, 15), "welcome", 2), (ny(9, 8, 9, 15), "intake_request", 2),
        (ny(9, 8, 10), "welcome", 3), (ny(9, 8, 10), "intake_request", 3),
        (ny(9, 8, 11), "welcome", 4), (ny(9, 8, 11), "intake_request", 4)]

    # The owner's rung went to the backup once, and the handover is in the log.
    handovers = [e for e in events if e.kind == "handover_to_backup"]
    assert [(e.at, e.onboarding_id, e.detail["to"]) for e in handovers] == [
        (ny(9, 14, 9, 15), ob_id, BACKUP)]
    assert [(e.kind, e.detail["email"]) for e in events if e.kind == "owner_away"] == [
        ("owner_away", OWNER)]
    no_response = [r for r in rows if "No response" in r.subject]
    assert "covering for the owner, who is away" in no_response[0].body_text
    assert "covering" not in no_response[1].body_text

    # One SMTP connection per sweep that had mail, however many messages it carried.
    sweeps_with_mail = {at for at, _s, _r in fortnight.arrivals}
    assert smtp.count_connections == len(sweeps_with_mail) == 13


def test_an_owner_away_until_friday_is_covered_until_friday_midnight_local(
        db_url: str, smtp: LoopbackSmtp, playbook: Playbook) -> None:
    """`handoff owner away --until FRI` means all of Friday in New York, not Friday in UTC."""
    factory = session_factory(db_url)
    fortnight = Fortnight(factory, playbook, smtp)
    fortnight.close_deal()
    # Opened at Thursday's opening: owner rung Thu 13:00, backup Thu 17:00 (one business day
    # from 09:00 ends at that day's close), founder Fri 17:00.
    fortnight.open_blocker(ny(9, 17, 9))
    fortnight.tx(lambda s: records.set_owner_away(s, OWNER, until=dt.date(2026, 9, 18),
                                                  at=ny(9, 16, 18), by=OWNER,
                                                  tz=playbook.calendar.tz))
    # A manual `handoff sweep --as-of` on Friday evening: 21:30 EDT is Saturday 01:30 UTC.
    as_of = ny(9, 18, 21, 30).astimezone(dt.UTC)
    assert as_of.date() == dt.date(2026, 9, 19)
    report = run_sweep(factory, playbook, get_settings(), as_of, messages=False)

    assert report.queued_escalations == 3
    sent = [(str(m.message["Subject"])[:15], m.rcpt_tos) for m in smtp.messages]
    assert sent == [("[level 1 of 3] ", (BACKUP,)), ("[level 2 of 3] ", (BACKUP,)),
                    ("[level 3 of 3] ", (FOUNDER,))]
    with factory() as session:
        handovers = list(session.scalars(select(Event).where(Event.kind == "handover_to_backup")))
    assert [(e.at, e.detail["to"]) for e in handovers] == [(as_of, BACKUP)]
