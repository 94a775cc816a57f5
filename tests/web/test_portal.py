"""The portal over real HTTP (uvicorn on loopback): links, questionnaire, uploads, and a hostile
caller. Database on SQLite; the link key, uploads and outbox are the test's own."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from db.models import Artifact, Communication, IntakeAnswer, PortalLink, PortalUpload
from db.playbook import get_playbook
from db.session import dispose_all, session_factory
from tasks.portal import links
from tasks.portal.links import token_for
from tests.web.conftest import Web
from tests.web.portal_client import (
    COMPLETE,
    SEEN,
    count,
    database_fingerprint,
    form_action,
    new_client,
    pdf_bytes,
    png_bytes,
    post_intake,
)

FILES = [("logo", ("logo.png", png_bytes(), "image/png")),
         ("brand_guide", ("guide.pdf", pdf_bytes(), "application/pdf"))]


def _session(db_url: str):  # type: ignore[no-untyped-def]
    return session_factory(db_url)()


def test_the_status_page_speaks_the_clients_words(web: Web, sqlite_url: str) -> None:
    _id, link = new_client(sqlite_url, get_playbook())
    page = web.get(link)
    assert page.status_code == 200
    assert "Acme Dental: your onboarding" in page.text
    assert "Getting started" in page.text and "The five steps" in page.text
    assert "va@northwind.example" in page.text  # the owner to contact
    assert "Start the intake questionnaire" in page.text
    assert "We aim to finish" in page.text  # the stage's business-time due date


def test_pages_read_without_the_write_lock(web_factory: Callable[..., Web],
                                          sqlite_url: str) -> None:
    """A client's page view reads a snapshot: it neither waits for a writer nor makes one wait
    (pages used to begin IMMEDIATE on SQLite, queueing behind every VA's and flow's write)."""
    web = web_factory(sqlite_busy_ms=50)
    dispose_all()  # connections from here on give up on a held lock after 50 ms, not 15 s
    _id, link = new_client(sqlite_url, get_playbook())
    writer = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a VA's write in progress
        assert web.get(link).status_code == 200
        assert web.get(f"{link}/intake").status_code == 200
    finally:
        writer.rollback()
        writer.close()


def test_save_resume_and_submit_records_the_artifacts_once(web: Web, sqlite_url: str) -> None:
    playbook = get_playbook()
    onboarding_id, link = new_client(sqlite_url, playbook)
    half = {k: v for k, v in list(COMPLETE.items())[:6]}
    saved = post_intake(web.client, link, half)
    assert saved.status_code == 303 and saved.headers["location"].endswith("/intake?saved=1")
    again = web.get(f"{link}/intake").text  # come back later: the answers are there
    assert 'value="Pat Lee"' in again and "Sam Ortiz" in again
    early = post_intake(web.client, link, {}, action="submit")
    assert early.headers["location"].endswith("?incomplete=1")
    assert "required answers still missing" in web.get(early.headers["location"]).text
    done = post_intake(web.client, link, COMPLETE, files=FILES, action="submit")
    assert done.status_code == 303 and done.headers["location"].endswith("?submitted=1")
    with _session(sqlite_url) as session:
        keys = {a.key: a.recorded_by for a in session.scalars(
            select(Artifact).where(Artifact.onboarding_id == onboarding_id))}
        assert keys["intake_questionnaire_completed"] == "client (portal)"
        assert keys["required_assets_received"] == "client (portal)"
        notices = session.scalars(select(Communication).where(
            Communication.template == "portal_intake_submitted")).all()
        assert len(notices) == 1 and notices[0].recipients == "va@northwind.example"
        assert "logo.png" in notices[0].body_text and "guide.pdf" in notices[0].body_text
    status = web.get(f"{link}?submitted=1").text
    assert "we have your questionnaire" in status and "guide.pdf" in status
    # After submission answers are read-only; the same post changes nothing.
    changed = post_intake(web.client, link, {**COMPLETE, "goals": "something else"})
    assert changed.status_code == 400 and "can no longer change" in changed.text


def test_a_textareas_crlf_line_breaks_are_kept_as_line_breaks(web: Web, sqlite_url: str) -> None:
    """Browsers encode a textarea's newlines as CRLF; a lone CR is still refused."""
    _id, link = new_client(sqlite_url, get_playbook())
    assert post_intake(web.client, link, {"billing_address": "1 Main St\r\nSpringfield"}
                       ).status_code == 303
    with _session(sqlite_url) as session, session.begin():
        assert session.scalars(select(IntakeAnswer.value)).one() == "1 Main St\nSpringfield"
    assert post_intake(web.client, link, {"billing_address": "a\rb"}).status_code == 400


def test_one_bad_answer_refuses_the_whole_post(web: Web, sqlite_url: str) -> None:
    onboarding_id, link = new_client(sqlite_url, get_playbook())
    response = post_intake(web.client, link, {"goals": "fine", "ap_contact_email": "not-an-email",
                                              "current_website": "javascript:alert(1)"},
                           files=FILES)
    assert response.status_code == 400
    assert "not an email address" in response.text and "not a web address" in response.text
    with _session(sqlite_url) as session:
        assert count(session, "SELECT count(*) FROM intake_answers") == 0
        assert count(session, "SELECT count(*) FROM portal_uploads") == 0
    assert not (web.home / "uploads" / str(onboarding_id)).exists() or not any(
        (web.home / "uploads" / str(onboarding_id)).iterdir())


def test_twenty_gets_and_heads_change_nothing(web: Web, sqlite_url: str) -> None:
    onboarding_id, link = new_client(sqlite_url, get_playbook())
    post_intake(web.client, link, {"goals": "grow"}, files=FILES[:1])
    with _session(sqlite_url) as session, session.begin():
        upload_id = session.scalars(select(PortalUpload.id)).one()
    before = database_fingerprint(sqlite_url, web.home / "uploads")
    paths = [link, f"{link}/intake", f"{link}/files/{upload_id}", f"{link}/seen", "/",
             f"{link}x", "/c/1-" + "A" * 32, f"{link}/files/999", "/healthz", "/static/portal.js"]
    for index in range(20):
        method = "GET" if index % 2 == 0 else "HEAD"
        response = web.client.request(method, paths[index % len(paths)])
        assert response.status_code in (200, 404, 405), (method, response.status_code)
    assert database_fingerprint(sqlite_url, web.home / "uploads") == before
    with _session(sqlite_url) as session, session.begin():
        assert session.get(PortalLink, onboarding_id).last_opened_at is not None  # the save


def test_last_opened_is_set_by_the_pages_script_never_by_a_get(web: Web, sqlite_url: str) -> None:
    onboarding_id, link = new_client(sqlite_url, get_playbook())
    page = web.get(link).text
    with _session(sqlite_url) as session, session.begin():
        assert session.get(PortalLink, onboarding_id) is None
    beacon = SEEN.search(page)
    assert beacon
    import html

    assert web.post(html.unescape(beacon.group(1))).status_code == 204
    with _session(sqlite_url) as session, session.begin():
        assert session.get(PortalLink, onboarding_id).last_opened_at is not None


def test_every_dead_link_gets_the_same_404(web: Web, sqlite_url: str) -> None:
    playbook = get_playbook()
    first, link = new_client(sqlite_url, playbook)
    second, other = new_client(sqlite_url, playbook, client="Other Co")
    revoked, revoked_link = new_client(sqlite_url, playbook, client="Revoked Co")
    now = dt.datetime.now(dt.UTC)
    expired, expired_link = new_client(sqlite_url, playbook, client="Expired Co",
                                       closed_at=now - dt.timedelta(days=60))
    with _session(sqlite_url) as session, session.begin():
        links.rotate(session, playbook, first, by="va", at=now)  # `link` is now the old one
        links.revoke(session, playbook, revoked, by="va", at=now)
        from tasks.onboarding.records import get_onboarding

        ob = get_onboarding(session, expired)
        ob.status, ob.ready_at = "ready", now - dt.timedelta(days=31)
    mac_of_second = other.split("-", 1)[1]
    dead = {
        "rotated": link, "revoked": revoked_link, "expired": expired_link,
        "tampered": other[:-1] + ("A" if other[-1] != "A" else "B"),
        "other client's mac": f"/c/{first}-{mac_of_second}",
        "unknown id": f"/c/99999-{mac_of_second}", "garbage": "/c/..%2f..%2fetc",
    }
    bodies = set()
    for why, path in dead.items():
        response = web.get(path)
        assert response.status_code == 404, why
        bodies.add(response.text)
    assert len(bodies) == 1
    assert web.get(f"/c/{token_for(first, 2)}").status_code == 200  # the rotated-in link
    assert web.get(other).status_code == 200


def test_guessing_links_is_rate_limited(web_factory, sqlite_url: str) -> None:  # type: ignore[no-untyped-def]
    web: Web = web_factory(portal_guess_limit=5)
    _id, link = new_client(sqlite_url, get_playbook())
    for n in range(5):
        assert web.get(f"/c/{n + 100}-{'A' * 32}").status_code == 404
    blocked = web.get(link)
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0


def test_a_post_on_a_real_link_without_its_token_is_refused(web: Web, sqlite_url: str) -> None:
    _id, link = new_client(sqlite_url, get_playbook())
    other_id, other = new_client(sqlite_url, get_playbook(), client="Other Co")
    assert web.post(f"{link}/intake", data={"goals": "x"}).status_code == 403
    # A token issued for another client's page does not open this one.
    foreign = form_action(web.client, f"{other}/intake").split("?", 1)[1]
    assert web.post(f"{link}/intake?{foreign}", data={"goals": "x"}).status_code == 403
    with _session(sqlite_url) as session:
        assert count(session, "SELECT count(*) FROM intake_answers") == 0


def test_an_oversized_file_is_refused_while_it_streams(web_factory, sqlite_url: str) -> None:  # type: ignore[no-untyped-def]
    web: Web = web_factory(portal_max_file_bytes=50_000, portal_max_upload_bytes=120_000)
    onboarding_id, link = new_client(sqlite_url, get_playbook())
    big = pdf_bytes() + b"0" * 60_000
    response = post_intake(web.client, link, {"goals": "x"},
                           files=[("brand_guide", ("big.pdf", big, "application/pdf"))])
    assert response.status_code == 413 and "limit" in response.text
    url = form_action(web.client, f"{link}/intake")
    from tests.web.test_app import _raw_post

    # Declared over the request cap: refused from the header, before a byte of body is read.
    reply = _raw_post(web.base_url, url, {"Content-Type": "multipart/form-data; boundary=x",
                                          "Content-Length": "900000"}, b"")
    assert reply.startswith("HTTP/1.1 413"), reply
    with _session(sqlite_url) as session:
        assert count(session, "SELECT count(*) FROM portal_uploads") == 0
        assert count(session, "SELECT count(*) FROM intake_answers") == 0


def test_an_executable_renamed_pdf_is_refused(web: Web, sqlite_url: str) -> None:
    _id, link = new_client(sqlite_url, get_playbook())
    program = Path("/bin/true").read_bytes()[:4096]
    for name, content in (("invoice.pdf", program), ("logo.pdf", b"MZ\x90\x00" + b"\0" * 200),
                          ("guide.pdf", b"<html><script>alert(1)</script></html>")):
        response = post_intake(web.client, link, {},
                               files=[("brand_guide", (name, content, "application/pdf"))])
        assert response.status_code == 400, name
        assert "checked from its content" in response.text
    with _session(sqlite_url) as session:
        assert count(session, "SELECT count(*) FROM portal_uploads") == 0


def test_dot_dot_slash_in_a_filename_is_harmless(web: Web, sqlite_url: str) -> None:
    onboarding_id, link = new_client(sqlite_url, get_playbook())
    response = post_intake(web.client, link, {}, files=[
        ("brand_guide", ("../../../../etc/passwd.pdf", pdf_bytes(), "application/pdf")),
        ("logo", ("..\\..\\win.ini\r\nX-Evil: 1.png", png_bytes(), "image/png"))])
    assert response.status_code == 303
    folder = web.home / "uploads" / str(onboarding_id)
    with _session(sqlite_url) as session, session.begin():
        rows = session.scalars(select(PortalUpload).order_by(PortalUpload.id)).all()
        assert rows[0].original_name == "passwd.pdf"
        assert rows[1].original_name.startswith("win.ini")  # the browser encodes CR LF
        for name in (r.original_name for r in rows):
            assert not any(c in name for c in "/\\\r\n") and ".." not in name
        for row in rows:
            assert (folder / row.stored_name).is_file()
            assert "/" not in row.stored_name and ".." not in row.stored_name
    every = [p for p in (web.home).rglob("*") if p.is_file() and p.suffix in (".pdf", ".png")]
    assert all(p.parent == folder for p in every)
    download = web.get(f"{link}/files/{rows[1].id}")
    assert download.status_code == 200 and download.content == png_bytes()
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment;") and "\r" not in disposition
    assert download.headers["x-content-type-options"] == "nosniff"
    # Another client's link cannot fetch this client's file.
    _other, other_link = new_client(sqlite_url, get_playbook(), client="Other Co")
    assert web.get(f"{other_link}/files/{rows[1].id}").status_code == 404


def test_script_in_an_answer_is_inert_in_the_notice_packet_and_artifact(
        web: Web, sqlite_url: str) -> None:
    from tasks.onboarding.packet import assemble_packet
    from tasks.portal.publish import answers_markdown

    playbook = get_playbook()
    onboarding_id, link = new_client(sqlite_url, playbook)
    evil = "<script>alert('x')</script> **bold** [link](javascript:alert(1)) | pipe"
    done = post_intake(web.client, link, {**COMPLETE, "goals": evil, "audience": evil},
                       files=FILES, action="submit")
    assert done.status_code == 303
    page = web.get(f"{link}/intake").text
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    with _session(sqlite_url) as session, session.begin():
        notice = session.scalars(select(Communication).where(
            Communication.template == "portal_intake_submitted")).one()
        assert "<script>" not in notice.body_html and "&lt;script&gt;" in notice.body_html
        markdown = answers_markdown(session, playbook, onboarding_id)
        packet, _ctx = assemble_packet(session, playbook, onboarding_id,
                                       dt.datetime.now(dt.UTC))
    for text in (markdown, packet.markdown):
        assert "<script>" not in text and "&lt;script&gt;" in text
        assert "[link](javascript" not in text and "\\*\\*bold\\*\\*" in text
    assert "Intake questionnaire | submitted through the portal" in packet.markdown


def test_two_tabs_submitting_at_once_record_it_once(web: Web, sqlite_url: str) -> None:
    onboarding_id, link = new_client(sqlite_url, get_playbook())
    post_intake(web.client, link, COMPLETE, files=FILES)
    urls = [form_action(web.client, f"{link}/intake") for _ in range(2)]
    results: list[int] = []
    barrier = threading.Barrier(2)

    def submit(url: str) -> None:
        with httpx.Client(base_url=web.base_url, timeout=60) as tab:
            barrier.wait()
            results.append(tab.post(url, data={"action": "submit"}).status_code)

    tabs = [threading.Thread(target=submit, args=(u,)) for u in urls]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.join()
    assert results == [303, 303]
    with _session(sqlite_url) as session:
        assert count(session, "SELECT count(*) FROM intake_submissions") == 1
        assert count(session, "SELECT count(*) FROM artifacts WHERE key = "
                              "'intake_questionnaire_completed'") == 1
        assert count(session, "SELECT count(*) FROM events WHERE kind = 'intake_submitted'") == 1
        assert count(session, "SELECT count(*) FROM communications WHERE template = "
                              "'portal_intake_submitted'") == 1


TEXT_FIELDS = ["primary_contact_name", "billing_address", "goals", "approver_email",
               "current_website", "target_launch", "primary_contact_channel", "po_required",
               "channels_today"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(TEXT_FIELDS),
       value=st.one_of(st.text(max_size=300), st.text(alphabet=st.characters(
           codec="utf-8"), min_size=150, max_size=5000), st.sampled_from(
           ["", " ", "\x00", "a\r\nb", "\u2028", "yes", "Email", "2026-13-40", "https://x.y",
            "<script>alert(1)</script>", "a" * 20001])))
def test_fuzzed_answers_are_saved_clean_or_refused_in_one_line(
        fuzz_portal: tuple[Web, str, str], field: str, value: str) -> None:
    web, db_url, link = fuzz_portal
    from db.questionnaire import QuestionField
    from db.validation import HandoffError
    from tasks.portal.intake import clean_answer

    item: QuestionField = get_playbook().portal.questionnaire.field(field)  # type: ignore[union-attr,assignment]
    try:
        expected = clean_answer(item, [value] if item.kind == "multi_choice" else value)
        ok = True
    except HandoffError:
        ok = False
    url = form_action(web.client, f"{link}/intake")
    response = web.client.post(url, data={field: value, "action": "save"},
                               files=[("_none", ("", b"", "application/octet-stream"))])
    if not ok:
        assert response.status_code in (400, 413), response.status_code
        if response.status_code == 400:
            assert "Nothing was saved" in response.text
        return
    assert response.status_code == 303, response.text[:300]
    with _session(db_url) as session, session.begin():
        stored = session.scalars(select(IntakeAnswer.value).where(
            IntakeAnswer.field_key == field)).first()
    assert stored == expected


@pytest.fixture
def fuzz_portal(web: Web, sqlite_url: str) -> tuple[Web, str, str]:
    _id, link = new_client(sqlite_url, get_playbook())
    return web, sqlite_url, link
