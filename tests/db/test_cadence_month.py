"""A client who never answers, over a simulated month of hourly sweeps: the reminder cadence the
playbook describes, its end, and nothing after it.

The deal closes on Monday 2026-03-02 at 09:00 New York time (March has no US public holiday; the
clocks go forward on Sunday 03-08, which the clock-hour spacing crosses). The VA confirms the
close at 09:30, so the 10:00 sweep sends the welcome and the intake request. Then the client
is silent. A sweep (reminders and escalations, then delivery) runs every hour, day and night,
until 2026-04-01.

The expected instants are computed here from the playbook's words, not read back from
tasks/comms/cadences.py: a reminder becomes eligible `every_min` clock hours after the previous
message (twice that once `at_escalation: slow` is in force, i.e. from the
`no_response_after_reminder_cycles`-th unanswered reminder on) and goes out at the first hourly
sweep inside business hours (09:00-17:00 Mon-Fri New York); `max_cycles` reminders at most,
`stop` ends the cadence at the reminder that arms the escalation, `pause` holds it there until
the client answers. When the cadence has ended, the owner is told once, when the last reminder's
longest spacing (`every_max`, doubled when slowed) has passed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Communication, Onboarding
from db.playbook import Playbook, get_playbook, load_playbook
from db.session import session_factory
from db.settings import get_settings
from tasks.comms.cadences import due_messages
from tasks.comms.snapshot import Client, SentMessage, Snapshot
from tasks.comms.sweeps import run_sweep
from tasks.mail.outbox import Draft
from tasks.mail.render import catalog, render_message
from tasks.onboarding import records

NY = ZoneInfo("America/New_York")
SHIPPED = Path(__file__).resolve().parents[2] / "deployments" / "playbook.yaml"
CLOSED = dt.datetime(2026, 3, 2, 9, 0, tzinfo=NY)
CONFIRMED = CLOSED + dt.timedelta(minutes=30)
MONTH_END = dt.datetime(2026, 4, 1, 10, 0, tzinfo=NY)
VA = "va@northwind.example"
CONTACT = "pat@acme.example"


def playbook_with(tmp_path: Path, **reminder: Any) -> Playbook:
    """The shipped playbook with these keys of slas.intake_reminder changed (None: removed)."""
    raw = yaml.safe_load(SHIPPED.read_text())
    sla = raw["slas"]["intake_reminder"]
    for key, value in reminder.items():
        if value is None:
            sla.pop(key, None)
        else:
            sla[key] = value
    path = tmp_path / "playbook.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_playbook(path)


def hourly(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Every top of the hour from start to end, in real (UTC) hours."""
    out, at = [], start.astimezone(dt.UTC)
    while at <= end:
        out.append(at)
        at += dt.timedelta(hours=1)
    return out


def working_hour(at: dt.datetime, zone: ZoneInfo) -> bool:
    """09:00-17:00 Monday to Friday in `zone` (no holiday falls in this month)."""
    local = at.astimezone(zone)
    return local.isoweekday() <= 5 and dt.time(9) <= local.time() < dt.time(17)


def first_open_sweep(at: dt.datetime, zone: ZoneInfo = NY) -> dt.datetime:
    """The first hourly sweep at or after `at` inside working hours in `zone`."""
    sweep = first_hour(at)
    while not working_hour(sweep, zone):
        sweep += dt.timedelta(hours=1)
    return sweep


def expected_cadence(playbook: Playbook, request_sent: dt.datetime, zone: ZoneInfo = NY
                     ) -> tuple[list[dt.datetime], dt.datetime | None]:
    """The reminders' send instants, and when the owner hears the cadence ended (None: never),
    for a client who never answers; computed from the playbook's words alone."""
    sla = playbook.slas["intake_reminder"]
    n = playbook.escalations.no_response_after_reminder_cycles
    mode = sla.at_escalation.value if sla.at_escalation else None
    cap = sla.max_cycles or 10**6
    if mode == "stop":
        cap = min(cap, n)
    if mode == "pause":
        cap = min(cap, n)  # a silent client never answers: the pause never lifts
    sent: list[dt.datetime] = []
    last = request_sent
    while len(sent) < cap:
        factor = 2 if mode == "slow" and len(sent) >= n else 1
        eligible = last + dt.timedelta(hours=(sla.every_min or 0) * factor)
        if eligible > MONTH_END:
            break
        last = first_open_sweep(eligible, zone)
        sent.append(last)
    if sla.max_cycles is None or len(sent) < sla.max_cycles:
        return sent, None  # stopped or paused at the escalation: its ladder is the hand-over
    factor = 2 if mode == "slow" and len(sent) >= n else 1
    return sent, first_hour(sent[-1] + dt.timedelta(hours=(sla.every_max or 0) * factor))


def first_hour(at: dt.datetime) -> dt.datetime:
    """The first hourly sweep at or after `at` (team notices go out at any hour)."""
    at = at.astimezone(dt.UTC)
    return at if at.minute == 0 and at.second == 0 else (
        at.replace(minute=0, second=0) + dt.timedelta(hours=1))


SYDNEY = ZoneInfo("Australia/Sydney")
CLIENTS = {  # name -> (client timezone, does the client move on?)
    "here": (None, False), "sydney": ("Australia/Sydney", False),
    "busy_here": (None, True), "busy_sydney": ("Australia/Sydney", True)}


def ny(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=NY)


@dataclass
class Month:
    """The outbox and the records after the month, per client name."""

    playbook: Playbook
    rows: dict[str, list[Communication]]
    onboardings: dict[str, Onboarding]


def _complete_stage(factory: sessionmaker[Session], playbook: Playbook, ob_id: int,
                    at: dt.datetime) -> None:
    with factory() as session, session.begin():
        ob = records.get_onboarding(session, ob_id)
        for key in records.missing_items(session, playbook, ob):
            records.record_artifact(session, playbook, ob_id, key, by=VA, at=at)
        records.advance(session, playbook, ob_id, actor=VA, at=at)


def run_month(factory: sessionmaker[Session], playbook: Playbook) -> Month:
    """Four identical deals but for the client's timezone and whether the client moves on;
    every hour of the month a sweep (reminders, escalations, delivery), as `handoff sweep
    --as-of` runs it."""
    ids: dict[str, int] = {}
    for name, (zone, _busy) in CLIENTS.items():
        with factory() as session, session.begin():
            ids[name] = records.create_onboarding(session, playbook, records.NewOnboarding.parse(
                client=f"Acme {name}", segment="smb", offer="Growth retainer", owner=VA,
                backup="va2@northwind.example", contacts=CONTACT, closed_at=CLOSED,
                kickoff_by=None, first_milestone=None, client_tz=zone), actor="test").id
    busy = [ids[n] for n, (_z, moves) in CLIENTS.items() if moves]

    def schedule(session: Session, ob_id: int) -> None:
        records.schedule_kickoff(session, playbook, ob_id, kickoff_at=ny(6, 10), by=VA,
                                 at=ny(4, 11, 30))

    actions: list[tuple[dt.datetime, Callable[[], None]]] = [
        (CONFIRMED, lambda: [_complete_stage(factory, playbook, i, CONFIRMED)
                             for i in ids.values()]),
        # The busy clients send their intake on Wednesday, meet on Friday, then setup runs.
        (ny(4, 11), lambda: [_complete_stage(factory, playbook, i, ny(4, 11)) for i in busy]),
        (ny(4, 11, 30), lambda: [_in_tx(factory, lambda s, i=i: schedule(s, i)) for i in busy]),
        (ny(6, 10, 50), lambda: [_complete_stage(factory, playbook, i, ny(6, 10, 50))
                                 for i in busy]),
    ]
    settings = get_settings()
    timeline = [(at.astimezone(dt.UTC), 0, step) for at, step in actions]
    timeline += [(at, 1, (lambda at=at: run_sweep(factory, playbook, settings, at)))
                 for at in hourly(CONFIRMED + dt.timedelta(minutes=30), MONTH_END)]
    for _at, _order, step in sorted(timeline, key=lambda t: (t[0], t[1])):
        step()
    with factory() as session:
        rows = list(session.scalars(select(Communication).where(
            Communication.audience != "alert").order_by(Communication.id)))
        obs = {name: session.get(Onboarding, ob_id) for name, ob_id in ids.items()}
        session.expunge_all()
    return Month(playbook=playbook,
                 rows={n: [r for r in rows if r.onboarding_id == i] for n, i in ids.items()},
                 onboardings={n: ob for n, ob in obs.items() if ob is not None})


def _in_tx(factory: sessionmaker[Session], action: Callable[[Session], object]) -> None:
    with factory() as session, session.begin():
        action(session)


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Month]:
    """One month of hourly sweeps on SQLite, shared by the tests below (it is the costly part)."""
    from db.session import upgrade

    home = tmp_path_factory.mktemp("month") / "var"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HANDOFF_HOME", str(home))
        for name in ("HANDOFF_DATABASE_URL", "HANDOFF_SMTP_HOST", "HANDOFF_IMAP_HOST"):
            mp.delenv(name, raising=False)
        mp.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
        get_settings.cache_clear()
        home.mkdir(parents=True)
        url = f"sqlite:///{home / 'handoff.db'}"
        upgrade(url)
        mp.setenv("HANDOFF_DATABASE_URL", url)
        get_settings.cache_clear()
        yield run_month(session_factory(url), get_playbook())
    get_settings.cache_clear()


def _sent(rows: list[Communication]) -> dict[str, list[dt.datetime]]:
    out: dict[str, list[dt.datetime]] = {}
    for row in rows:
        assert row.sent_at is not None, (row.template, row.status)
        out.setdefault(row.template, []).append(row.sent_at.astimezone(dt.UTC))
    return out


def _client(rows: list[Communication]) -> list[tuple[str, int, str, str]]:
    return [(r.template, r.cycle, r.subject, r.body_text) for r in rows if r.audience == "client"]


def test_a_silent_client_gets_the_shipped_cadence_and_nothing_after(month: Month) -> None:
    rows = month.rows["here"]
    assert {r.status for r in rows} == {"sent"}
    team = [r.template for r in rows if r.audience != "client"]
    check_month(month.playbook, _sent(rows), _client(rows), team[-1])
    assert len(_sent(rows)["missing_info_reminder"]) == 4  # slas.intake_reminder.max_cycles
    assert rows[-1].recipients == VA
    assert "handoff sent 4 reminders" in rows[-1].body_text


def test_a_silent_client_in_sydney_gets_the_same_cadence_in_sydney_hours(month: Month) -> None:
    """New York 09-17 and Sydney 09-17 never overlap (15-16 hours apart): Sydney's hours win."""
    rows = month.rows["sydney"]
    sent = _sent(rows)
    (request_sent,) = sent["intake_request"]
    # Queued at the 10:00 sweep in New York (02:00 Tuesday in Sydney): Tuesday 09:00 Sydney.
    assert request_sent == dt.datetime(2026, 3, 3, 9, tzinfo=SYDNEY)
    reminders, notice = expected_cadence(month.playbook, request_sent, SYDNEY)
    assert sent["missing_info_reminder"] == reminders
    assert sent["reminders_ended"] == [notice]


def test_client_mail_goes_out_in_the_clients_own_working_hours(month: Month) -> None:
    for name, (zone, _busy) in CLIENTS.items():
        tz = ZoneInfo(zone) if zone else NY
        client_rows = [r for r in month.rows[name] if r.audience == "client"]
        assert client_rows, name
        outside = [(r.template, r.sent_at.astimezone(tz)) for r in client_rows
                   if r.sent_at is None or not working_hour(r.sent_at, tz)]
        assert outside == [], name
    busy = {r.template for r in month.rows["busy_sydney"]}
    assert {"welcome", "intake_request", "kickoff_confirmation", "kickoff_recap",
            "setup_progress_update"} <= busy


def test_the_sla_clocks_still_count_in_the_business_calendar(month: Month) -> None:
    """A client's timezone moves when mail goes out, never when it is due."""
    for here, there in (("here", "sydney"), ("busy_here", "busy_sydney")):
        def anchored(name: str) -> list[tuple[str, int, dt.datetime | None]]:
            # Clocks that start from a fact (the close, a stage entry, the kickoff); a
            # reminder's clock starts from the message before it, so it moves with it.
            rows = month.rows[name]
            first_update = [r for r in rows if r.template == "setup_progress_update"][:1]
            return [(r.template, r.cycle, r.due_at) for r in rows if r.template in (
                "welcome", "kickoff_confirmation", "kickoff_recap")] + [
                (r.template, r.cycle, r.due_at) for r in first_update]
        assert anchored(here) == anchored(there)
        assert (month.onboardings[here].next_action_due
                == month.onboardings[there].next_action_due)
        for name in (here, there):
            chain = [r for r in month.rows[name]
                     if r.template in ("intake_request", "missing_info_reminder")]
            for before, reminder in zip(chain, chain[1:], strict=False):
                assert before.sent_at is not None and reminder.due_at is not None
                assert reminder.due_at - before.sent_at in (dt.timedelta(hours=48),
                                                             dt.timedelta(hours=96))
    welcome = {n: next(r for r in month.rows[n] if r.template == "welcome")
               for n in ("here", "sydney")}
    # Due four business hours after Monday 09:00 in New York; the Sydney client's waited for
    # 09:00 Tuesday in Sydney (17:00 Monday in New York): four business hours late, and the KPI
    # says so.
    assert welcome["here"].due_at == welcome["sydney"].due_at == ny(2, 13)
    assert (welcome["here"].late_business_minutes, welcome["sydney"].late_business_minutes) == (
        0, 240)


def simulated_month(playbook: Playbook) -> tuple[dict[str, list[dt.datetime]],
                                                 list[tuple[str, int, str, str]], str | None]:
    """The same month over the pure cadence functions alone, no database: each hour asks
    `due_messages` about one snapshot and "sends" what it returns at the first hourly sweep its
    audience allows (client mail: business hours), as the outbox does."""
    row = Onboarding(id=1, client_name="Acme Dental", segment="smb", offer="Growth retainer",
                     owner_email=VA, backup_email="va2@northwind.example",
                     contact_emails=CONTACT, stage="intake_completion",
                     stage_entered_at=CONFIRMED, closed_at=CLOSED, status="active",
                     kickoff_at=None, kickoff_by=None, first_milestone=None, next_action=None,
                     next_action_due=None)
    client = Client(row=row)
    pending: list[tuple[dt.datetime, SentMessage, Draft]] = []
    sent: dict[str, list[dt.datetime]] = {}
    client_mail: list[tuple[str, int, str, str]] = []
    last_team = None
    for at in hourly(CONFIRMED + dt.timedelta(minutes=30), MONTH_END):
        snap = Snapshot(clients=[client], away={}, keys={m.key for m in client.messages})
        for draft in due_messages(playbook, snap, at):
            message = SentMessage(template=draft.template, key=draft.key, status="queued",
                                  sent_at=None, created_at=at, cycle=draft.cycle)
            client.messages.append(message)
            to_client = catalog()[draft.template].audience == "client"
            pending.append((first_open_sweep(at) if to_client else at, message, draft))
        for window, message, draft in pending:
            if message.sent_at is None and window <= at:
                message.sent_at, message.status = at, "sent"
                sent.setdefault(draft.template, []).append(at)
                rendered = render_message(draft.template, draft.context)
                if catalog()[draft.template].audience == "client":
                    client_mail.append((draft.template, draft.cycle, rendered.subject,
                                        rendered.text))
                else:
                    last_team = draft.template
    return sent, client_mail, last_team


@pytest.mark.parametrize("variant", [
    {}, {"max_cycles": 6}, {"max_cycles": 1}, {"at_escalation": "stop"},
    {"at_escalation": "stop", "max_cycles": 1}, {"at_escalation": "pause"},
    {"max_cycles": 3, "at_escalation": None}, {"max_cycles": 2, "at_escalation": "slow"}],
    ids=["shipped", "six_slow", "one", "stop", "stop_one", "pause", "three_same_pace",
         "two_slow"])
def test_each_end_rule_over_a_simulated_month(tmp_path: Path, variant: dict[str, Any]) -> None:
    playbook = playbook_with(tmp_path, **variant)
    sent, client_mail, last_team = simulated_month(playbook)
    check_month(playbook, sent, client_mail, last_team)


def test_the_end_rules_differ(tmp_path: Path) -> None:
    """Each key changes what a silent client gets (the key -> test table points here)."""
    counts = {}
    for name, variant in {"shipped": {}, "max_cycles": {"max_cycles": 6},
                          "stop": {"at_escalation": "stop"},
                          "pause": {"at_escalation": "pause"},
                          "same_pace": {"at_escalation": None}}.items():
        sent, _client, _team = simulated_month(playbook_with(tmp_path, **variant))
        counts[name] = (sent.get("missing_info_reminder", []), sent.get("reminders_ended", []))
    assert len(counts["shipped"][0]) == 4 and len(counts["max_cycles"][0]) == 6
    assert len(counts["stop"][0]) == len(counts["pause"][0]) == 2
    assert counts["stop"][1] == counts["pause"][1] == []
    # The same four reminders, at the same pace throughout, end sooner than slowed ones.
    assert len(counts["same_pace"][0]) == 4
    assert counts["same_pace"][0][-1] < counts["shipped"][0][-1]


def check_month(playbook: Playbook, sent: dict[str, list[dt.datetime]],
                client: list[tuple[str, int, str, str]], last_team: str | None) -> None:
    """The month's outbox against the cadence computed from the playbook: `sent` is each
    template's send instants, `client` the client messages (template, cycle, subject, text) in
    order, `last_team` the template of the last team notice."""
    (request_sent,) = sent["intake_request"]
    assert request_sent == CONFIRMED + dt.timedelta(minutes=30)
    reminders, notice = expected_cadence(playbook, request_sent)
    assert sent.get("missing_info_reminder", []) == reminders
    assert sent.get("reminders_ended", []) == ([] if notice is None else [notice])
    # Nothing reaches the client after the last reminder, however long the month goes on.
    assert [t for t, _c, _s, _b in client] == ["welcome", "intake_request",
                                               *["missing_info_reminder"] * len(reminders)]
    # The last reminder, and only it, tells the client a person takes over.
    words = "This is our last automatic reminder."
    assert [c for _t, c, _s, body in client if words in body] == [len(reminders)]
    assert [c for _t, c, subject, _b in client if subject.startswith("Last reminder:")] == [
        len(reminders)]
    if notice is not None:
        assert last_team == "reminders_ended"  # nothing after the hand-over


def test_the_shipped_cadence_by_hand(tmp_path: Path) -> None:
    """The shipped rule written out once by hand, so the helper above is checked too."""
    playbook = playbook_with(tmp_path)
    reminders, notice = expected_cadence(playbook, dt.datetime(2026, 3, 2, 10, tzinfo=NY))
    assert [r.astimezone(NY) for r in reminders] == [
        dt.datetime(2026, 3, 3, 10, tzinfo=NY),  # request + 24 h
        dt.datetime(2026, 3, 4, 10, tzinfo=NY),  # + 24 h: the second arms the escalation
        dt.datetime(2026, 3, 6, 10, tzinfo=NY),  # slowed: + 48 h
        dt.datetime(2026, 3, 9, 9, tzinfo=NY),  # + 48 h is Sunday 11:00 EDT: Monday's opening
    ]
    assert notice is not None
    assert notice.astimezone(NY) == dt.datetime(2026, 3, 13, 9, tzinfo=NY)  # + 96 h


def test_a_client_reads_times_on_their_own_clock(month: Month) -> None:
    """The client reads the kickoff and the next step's timing in their own timezone."""
    def first(name: str, template: str) -> Communication:
        return next(r for r in month.rows[name] if r.template == template)

    assert first("busy_here", "kickoff_confirmation").subject == (
        "Kickoff confirmed: Fri 06 Mar 2026, 10:00 EST")
    assert first("busy_sydney", "kickoff_confirmation").subject == (
        "Kickoff confirmed: Sat 07 Mar 2026, 02:00 AEDT")
    # The welcome's timing is the intake stage's due: 5 business days from Monday 09:30 in New
    # York, across the change to summer time.
    assert "Timing:      Mon 09 Mar 2026, 09:30 EDT\n" in first("here", "welcome").body_text
    assert "Timing:      Tue 10 Mar 2026, 00:30 AEDT\n" in first("sydney", "welcome").body_text
