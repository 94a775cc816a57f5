"""Every message template, rendered from a real onboarding driven through the real rules.

One onboarding with a hostile name lives through the lifecycle on SQLite, with mail going to
.eml files (no SMTP host): the sweeps, the service layer and the packet assembly produce every
message the catalog declares, so the contexts are the ones production builds, not hand-made.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from db.models import Communication, utcnow
from db.playbook import Playbook, get_playbook
from db.session import session_factory
from db.settings import get_settings
from db.validation import HandoffError
from tasks.comms.context import context
from tasks.comms.snapshot import Client
from tasks.comms.sweeps import run_sweep
from tasks.mail.delivery import SENDING_LEASE, deliver
from tasks.mail.outbox import Draft, business_context, enqueue
from tasks.mail.render import TEMPLATES, TemplateError, catalog, render_message
from tasks.onboarding import records
from tasks.onboarding.packet import assemble_packet

NY = ZoneInfo("America/New_York")
HOSTILE = 'Acme <script>alert("x")</script> & "Sons" \'Ltd\''
NOTE = 'Client wrote: <img src=x onerror=alert(1)> "urgent"'
CONTACT = "pat@acme.example"
OWNER = "va@northwind.example"
# An HTML tag; a plain-text mailbox such as "Va <va@northwind.example>" is not one.
TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^>]*)?/?>")
# The onboarding messages (the catalog also holds the founder's reports).
MESSAGES = {"welcome", "intake_request", "missing_info_reminder", "kickoff_confirmation",
            "kickoff_recap", "setup_progress_update", "ready_to_deliver", "handoff_packet",
            "threshold_escalation", "delivery_failure", "blocker_missing_access",
            "blocker_missing_documents", "blocker_approval_delay", "blocker_schedule_conflict",
            "blocker_scope_ambiguity", "blocker_internal_dependency_delay"}


def ny(month: int, day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=NY)


@pytest.fixture
def lifecycle(sqlite_url: str, playbook: Playbook) -> dict[str, Communication]:
    """Drive one onboarding from close to ready; return the last message sent per template."""
    factory = session_factory(sqlite_url)
    settings = get_settings()
    assert settings.smtp_host is None  # .eml files under var/outbox

    def tx(action: Any) -> Any:
        with factory() as session, session.begin():
            return action(session)

    def finish_stage(at: dt.datetime) -> None:
        def act(session: Any) -> None:
            ob = records.get_onboarding(session, ob_id)
            for key in records.missing_items(session, playbook, ob):
                if key != "handoff_packet_delivered":
                    records.record_artifact(session, playbook, ob_id, key, by="va", at=at)
            if playbook.stage(ob.stage).gates:
                records.record_qa(session, ob_id, passed=True, reason=None, by="qa", at=at)
            if not records.missing_items(session, playbook, ob):
                records.advance(session, playbook, ob_id, actor="va", at=at)
        tx(act)

    new = records.NewOnboarding.parse(
        client=HOSTILE, segment="smb", offer="Growth retainer", owner=OWNER,
        backup="va2@northwind.example", contacts=CONTACT, closed_at=ny(11, 23, 10),
        kickoff_by=dt.date(2026, 12, 4), first_milestone=dt.date(2026, 12, 18))
    ob_id = tx(lambda s: records.create_onboarding(s, playbook, new, actor="va").id)
    run_sweep(factory, playbook, settings, ny(11, 23, 10, 30))  # welcome
    finish_stage(ny(11, 23, 10, 40))
    run_sweep(factory, playbook, settings, ny(11, 23, 11))  # intake request
    run_sweep(factory, playbook, settings, ny(11, 24, 11))  # reminder 1
    for blocker_type in playbook.blockers:
        tx(lambda s, t=blocker_type: records.open_blocker(
            s, playbook, ob_id, t, critical=t == "missing_access", note=NOTE, by="va",
            at=ny(11, 24, 11, 30), affects_timeline=t == "scope_ambiguity"))
    run_sweep(factory, playbook, settings, ny(11, 27, 16), messages=False)  # escalations
    finish_stage(ny(11, 30, 9))  # intake complete: kickoff alignment
    tx(lambda s: records.schedule_kickoff(s, playbook, ob_id, kickoff_at=ny(12, 1, 15),
                                          by="va", at=ny(11, 30, 9)))
    run_sweep(factory, playbook, settings, ny(11, 30, 10))  # kickoff confirmation
    finish_stage(ny(12, 1, 16))  # kickoff held: setup execution
    run_sweep(factory, playbook, settings, ny(12, 1, 17))  # kickoff recap
    run_sweep(factory, playbook, settings, ny(12, 4, 16))  # setup progress update
    finish_stage(ny(12, 7, 10))  # setup done: ready-to-deliver stage

    def packet(session: Any) -> None:
        _row, ctx = assemble_packet(session, playbook, ob_id, ny(12, 7, 11))
        enqueue(session, playbook, Draft(
            onboarding_id=ob_id, template="handoff_packet",
            recipients=[str(playbook.business.delivery_team.email)],
            key=f"handoff_packet:{ob_id}", context={"business": business_context(playbook), **ctx}),
            now=ny(12, 7, 11))
        records.record_artifact(session, playbook, ob_id, "handoff_packet_delivered", by="handoff",
                                at=ny(12, 7, 11))
        for blocker in records.open_blockers(session, ob_id):
            records.resolve_blocker(session, playbook, blocker.id, by="va", at=ny(12, 7, 11))
    tx(packet)
    finish_stage(ny(12, 7, 12))  # ready

    def ready(session: Any) -> None:
        ob = records.get_onboarding(session, ob_id)
        assert ob.status == "ready"
        enqueue(session, playbook, Draft(
            onboarding_id=ob_id, template="ready_to_deliver", recipients=ob.contacts,
            key=f"ready_to_deliver:{ob_id}", context=context(playbook, Client(row=ob))),
            now=ny(12, 7, 12))
        # A crash mid-send of the recap, found later: the owner's "uncertain" notice.
        session.execute(update(Communication).where(Communication.template == "kickoff_recap")
                        .values(status="sending", claimed_at=utcnow() - 2 * SENDING_LEASE))
    tx(ready)
    deliver(factory, playbook, settings, now=ny(12, 7, 12))

    with factory() as session:
        rows = list(session.scalars(select(Communication).order_by(Communication.id)))
    return {r.template: r for r in rows}


def test_every_catalog_template_is_rendered_by_the_lifecycle(
        lifecycle: dict[str, Communication]) -> None:
    specs = catalog()
    # blocker_escalation is the shared spec of the blocker_<type> scripts, not a message.
    assert not (TEMPLATES / "mail" / "blocker_escalation.html").exists()
    assert "blocker_escalation" not in specs  # a shared spec cannot be rendered on its own
    assert MESSAGES <= set(specs)
    # One blocker script per blocker type of the playbook, no more, no less.
    assert {n for n in specs if n.startswith("blocker_")} == {
        f"blocker_{t}" for t in get_playbook().blockers}
    assert set(lifecycle) == MESSAGES
    assert {r.status for t, r in lifecycle.items() if t != "kickoff_recap"} == {"sent"}


def test_html_and_a_real_plain_text_part(lifecycle: dict[str, Communication],
                                         home: Path) -> None:
    for name, row in lifecycle.items():
        assert row.body_html.lstrip().startswith("<!doctype html>"), name
        text = row.body_text.replace(HOSTILE, "").replace(NOTE, "")
        assert not TAG.search(text), (name, TAG.search(text))
        assert "&lt;" not in text and "&amp;" not in text and "&#" not in text, name
        assert len(text.strip()) > 80, name
    # The .eml on disk is multipart/alternative: text first, then HTML.
    eml = next((home / "outbox").glob("welcome*.eml"))
    message = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert str(message["Subject"]) == lifecycle["welcome"].subject


def test_every_client_message_states_owner_next_action_and_timing(
        lifecycle: dict[str, Communication]) -> None:
    client_templates = {n for n, s in catalog().items() if s.audience == "client"}
    assert client_templates == {"welcome", "intake_request", "missing_info_reminder",
                                "kickoff_confirmation", "kickoff_recap",
                                "setup_progress_update", "ready_to_deliver"}
    for name in client_templates:
        row = lifecycle[name]
        for body in (row.body_text, row.body_html):
            assert OWNER in body, name
            for label in ("Your owner:", "Next action:", "Timing:"):
                assert label in body, (name, label)
        timing = re.search(r"Timing:\s+(.+)", row.body_text)
        assert timing and re.search(r"\d", timing.group(1)), (name, timing)


def test_client_text_is_escaped_in_html(lifecycle: dict[str, Communication]) -> None:
    for name, row in lifecycle.items():
        assert "<script>" not in row.body_html and "onerror=alert" not in row.body_html.replace(
            "&lt;img src=x onerror=alert(1)&gt;", ""), name
        if name not in ("delivery_failure",):
            assert "Acme &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#34;Sons&#34; " \
                   "&#39;Ltd&#39;" in row.body_html, name
    assert "&lt;img src=x onerror=alert(1)&gt; &#34;urgent&#34;" in lifecycle[
        "blocker_missing_access"].body_html
    # A subject is a header, not HTML: the name is verbatim there, and on one line.
    assert lifecycle["welcome"].subject == f"Welcome to Northwind Studio, {HOSTILE}: your next steps"


def test_a_newline_in_a_client_name_never_reaches_a_subject(playbook: Playbook) -> None:
    with pytest.raises(HandoffError, match="client .* contains control characters"):
        records.NewOnboarding.parse(
            client="Acme\r\nBcc: victim@example.com", segment="smb", offer="x",
            owner=OWNER, backup="va2@northwind.example", contacts=CONTACT,
            closed_at=ny(11, 23, 10), kickoff_by=None, first_milestone=None)
    # And should one come from elsewhere, the renderer refuses the subject outright.
    ctx = _context(playbook, "welcome")
    ctx["client"] = {**ctx["client"], "name": "Acme\nBcc: victim@example.com"}
    with pytest.raises(TemplateError, match="subject with a line break"):
        render_message("welcome", ctx)


def _context(playbook: Playbook, name: str) -> dict[str, Any]:
    """A full context for one template, built by comms.context from an unsaved row."""
    from db.models import Onboarding

    row = Onboarding(id=7, client_name="Acme Dental", segment="smb", offer="Growth retainer",
                     owner_email=OWNER, backup_email="va2@northwind.example",
                     contact_emails=CONTACT, stage="intake_completion",
                     stage_entered_at=ny(11, 23, 10), closed_at=ny(11, 23, 10),
                     next_action="Send the intake", next_action_due=ny(11, 30, 10),
                     first_milestone=dt.date(2026, 12, 18))
    extras: dict[str, Any] = {
        "cycle": 2, "final": False, "reminders": 4, "last_sent": "Mon 09 Mar 2026, 09:00 EDT",
        "kickoff": {"local": "Tue 01 Dec 2026, 15:00 EST", "minutes": 45},
        "packet": {"revision": 1, "sections": [{"title": "Scope", "rows": [("In", "All")]}]},
        "blocker": {"id": 1, "label": "Missing access", "note": None, "critical": False,
                    "path": "owner", "founder_boundary": None, "founder_boundary_key": ""},
        "level": "level 1 of 3", "recipient_role": "owner", "age": "4 hours",
        "rule": {"title": "T", "action": "A"}, "detail": "D",
        "failed": {"template": "welcome", "recipients": CONTACT, "attempts": 1,
                   "error": "550", "reason": "refused", "client": "Acme Dental"},
    }
    return context(playbook, Client(row=row), **extras)


RENDERABLE = sorted(MESSAGES | {"reminders_ended"})


@pytest.mark.parametrize("name", RENDERABLE)
def test_a_missing_declared_field_fails_loudly(playbook: Playbook, name: str) -> None:
    full = _context(playbook, name)
    render_message(name, full)
    for field in catalog()[name].needs:
        partial = {k: v for k, v in full.items() if k != field}
        with pytest.raises(TemplateError, match=rf"{name}.*needs field\(s\) {field}\b"):
            render_message(name, partial)


def test_a_missing_nested_field_fails_loudly_too(playbook: Playbook) -> None:
    ctx = _context(playbook, "kickoff_confirmation")
    ctx["kickoff"] = {"minutes": 45}
    with pytest.raises(TemplateError, match="kickoff_confirmation.*'local'"):
        render_message("kickoff_confirmation", ctx)


def test_the_kickoff_invite_is_valid_rfc5545(lifecycle: dict[str, Communication]) -> None:
    row = lifecycle["kickoff_confirmation"]
    (attachment,) = row.attachments
    assert (attachment["filename"], attachment["mimetype"]) == ("kickoff.ics", "text/calendar")
    raw = base64.b64decode(attachment["content"])
    assert raw.endswith(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"")  # every line ends in CRLF, and only there
    lines = raw.decode("utf-8").split("\r\n")[:-1]
    props = dict(line.split(":", 1) for line in lines if not line.startswith(" "))
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-1] == "END:VCALENDAR"
    assert (props["VERSION"], props["METHOD"]) == ("2.0", "REQUEST")
    assert props["BEGIN"] == "VEVENT" or "BEGIN:VEVENT" in lines
    # 15:00 in New York on 1 Dec 2026 (EST, UTC-5) is 20:00 UTC; 45 minutes long.
    assert (props["DTSTART"], props["DTEND"]) == ("20261201T200000Z", "20261201T204500Z")
    assert re.fullmatch(r"\d{8}T\d{6}Z", props["DTSTAMP"])
    assert props["UID"].endswith("@handoff")
    assert props["ORGANIZER"] == f"mailto:{OWNER}"
    unfolded = raw.decode().replace("\r\n ", "")
    assert "SUMMARY:Kickoff: Acme <script>alert(\"x\")</script> & \"Sons\" 'Ltd' × " \
           "Northwind Studio" in unfolded


def test_the_kickoff_invite_folds_long_lines(lifecycle: dict[str, Communication]) -> None:
    (attachment,) = lifecycle["kickoff_confirmation"].attachments
    lines = base64.b64decode(attachment["content"]).split(b"\r\n")
    assert [line for line in lines if len(line) > 75] == []
