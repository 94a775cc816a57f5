"""The client's side in a real browser: Debian's Chromium (headless, through Playwright's
`executable_path`) against the portal the runner serves, with the real Prefect server, the real
runner and the loopback SMTP server of the flow stack.

The link comes from the welcome e-mail; the client fills part of the questionnaire, leaves,
comes back, finishes, uploads a PDF and a PNG, submits; the run leaves intake, the owner gets one
notice, and the answers are in the packet and on the run as a Prefect artifact.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.flow.conftest import Stack
from tests.flow.test_onboarding_flow import stage_of, suspended, wait_until
from tests.web.portal_client import pdf_bytes, png_bytes

CHROMIUM = "/usr/bin/chromium"
IN_CI = os.environ.get("CI", "").lower() == "true"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
OWNER = "jordan.reyes@northwind.example"  # the screenshots in docs/ show their name
SCRIPT = "<script>alert('x')</script>"
# Everything the VA does at intake: only what the client sends is left for the portal.
TEAM_ITEMS = ["docs_and_access_requested", "risk_flags_captured", "scope_summary_documented",
              "system_access_verified", "kickoff_agenda_prepared", "owner_map_confirmed"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian; never skipped under CI=true."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            pytest.fail("playwright is not installed and CI=true: the browser tests must run")
        pytest.skip("playwright not installed")
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing and CI=true (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                            "--disable-dev-shm-usage"])
        yield launched
        launched.close()


def _shots_dir(tmp_path: Path) -> list[Path]:
    """Screenshots go to the test's directory, and to HANDOFF_PORTAL_SCREENSHOTS when set."""
    out = [tmp_path]
    if os.environ.get("HANDOFF_PORTAL_SCREENSHOTS"):
        out.append(Path(os.environ["HANDOFF_PORTAL_SCREENSHOTS"]))
    return out


def _shoot(page: Any, name: str, dirs: list[Path], *, full_page: bool = True) -> None:
    """A screenshot of the whole page, or (full_page=False) of the window as the client sees it.

    The questionnaire is shot as the window: its Save/Submit bar is sticky, pinned to the
    window's bottom edge, and a full-page capture draws it wherever the first window ended,
    over the middle of the form."""
    first = dirs[0] / f"{name}.png"
    page.screenshot(path=str(first), full_page=full_page)
    assert first.stat().st_size > 10_000, name
    for extra in dirs[1:]:
        shutil.copy(first, extra / f"{name}.png")


def _assert_bar_in_view(page: Any) -> None:
    """The Save/Submit bar is on screen at the window's bottom, not only after the last field."""
    box = page.locator(".actions").bounding_box()
    height = page.viewport_size["height"]
    assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= height + 1, (
        box, height)
    assert page.get_by_role("button", name="Save progress").is_visible()


def _arrive(page: Any, pattern: str) -> None:
    """Wait for the redirect after a post (a loaded machine is slow); if the portal answered
    with the form again instead, fail with what it said."""
    try:
        page.wait_for_url(re.compile(pattern), timeout=120_000)
    except Exception as exc:
        raise AssertionError(f"no redirect to {pattern}; the page says: "
                             f"{page.inner_text('main')[:1500]}") from exc


def _welcome_link(stack: Stack, contact: str) -> str:
    def find() -> str | None:
        for message in stack.smtp.messages:
            if contact in message.rcpt_tos and "Welcome" in str(message.message["Subject"]):
                body = message.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
                match = re.search(r"(http://127\.0\.0\.1:\d+/c/[0-9]+-[A-Za-z0-9_-]{32})", body)
                return match.group(1) if match else None
        return None

    return wait_until("the welcome e-mail with the portal link", find, timeout=120)


def _notices(stack: Stack, client: str) -> list[str]:
    return [str(m.message["Subject"]) for m in stack.smtp.messages
            if OWNER in m.rcpt_tos and client in str(m.message["Subject"])
            and ("questionnaire" in str(m.message["Subject"])
                 or "uploaded" in str(m.message["Subject"]))]


@pytest.mark.flow
def test_client_fills_the_questionnaire_in_a_real_browser(
        stack: Stack, browser: Any, tmp_path: Path) -> None:
    client = "Browser Dental"
    onboarding_id, run_id = onboard_with_terms(stack, client)
    contact = "pat@browserdental.example"
    wait_until("run waits at intake", lambda: stage_of(stack, onboarding_id)
               == "intake_completion:active" and suspended(stack, run_id), timeout=180)
    stack.cli("artifact", "add", str(onboarding_id), *TEAM_ITEMS, "--by", "va")
    link = _welcome_link(stack, contact)
    dirs = _shots_dir(tmp_path)
    files = tmp_path / "files"
    files.mkdir()
    (files / "brand-guide.pdf").write_bytes(pdf_bytes(3))
    (files / "logo.png").write_bytes(png_bytes())

    # First visit: the status page, then part of the questionnaire, saved; then the client leaves.
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(link)
    assert page.get_by_role("heading", name=f"{client}: your onboarding").is_visible()
    assert "The completed intake questionnaire" in page.inner_text("main")
    page.get_by_role("link", name=re.compile("Start the intake questionnaire")).click()
    page.fill("#f-primary_contact_name", "Pat Lee")
    page.fill("#f-primary_contact_email", "pat@browserdental.example")
    page.locator("input[name=primary_contact_channel][value=Email]").check()
    page.fill("#f-goals", f"More patients {SCRIPT}")
    page.get_by_role("button", name="Save progress").click()
    _arrive(page, r"/intake\?saved=1$")
    assert "Saved." in page.inner_text("main")
    _assert_bar_in_view(page)
    _shoot(page, "portal-questionnaire-desktop", dirs, full_page=False)
    assert context.cookies() == []  # README: no cookie (the form token is in the action URL)
    context.close()

    # Later, from the same link in a fresh browser: the answers are there; finish and submit.
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(link + "/intake")
    assert page.input_value("#f-primary_contact_name") == "Pat Lee"
    assert SCRIPT in page.input_value("#f-goals")  # kept as text, shown as text
    _assert_bar_in_view(page)
    _shoot(page, "portal-questionnaire-phone", dirs, full_page=False)
    page.fill("#f-approver_name", "Sam Ortiz")
    page.fill("#f-approver_email", "sam@browserdental.example")
    page.fill("#f-billing_entity", "Browser Dental LLC")
    page.fill("#f-billing_address", "1 Main St\nSpringfield")
    page.fill("#f-ap_contact_email", "ap@browserdental.example")
    page.locator("input[name=po_required][value=no]").check()
    page.fill("#f-success_criteria", "40 new patients a month")
    page.fill("#f-audience", "Families within 5 miles")
    page.locator("input[name=access_granted][value='Website CMS']").check()
    page.locator("input[name=access_granted][value='Analytics']").check()
    page.locator("input[name=access_delegation_confirmed][value=yes]").check()
    page.set_input_files("#f-logo", str(files / "logo.png"))
    page.set_input_files("#f-brand_guide", str(files / "brand-guide.pdf"))
    page.get_by_role("button", name="Submit questionnaire").click()
    _arrive(page, r"\?submitted=1$")
    assert "we have your questionnaire" in page.inner_text("main")
    assert "brand-guide.pdf" in page.inner_text("main")
    _shoot(page, "portal-status-phone", dirs)
    context.close()

    # The run leaves intake on its own: the submission woke it, as `handoff artifact add` does.
    wait_until("the run left intake", lambda: stage_of(stack, onboarding_id)
               == "kickoff_alignment:active", timeout=180)
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(link)
    assert "Now: Kickoff" in page.inner_text("main")
    _shoot(page, "portal-status-desktop", dirs)
    context.close()

    wait_until("the owner's notice", lambda: _notices(stack, client), timeout=120)
    assert _notices(stack, client) == [f"{client} submitted the intake questionnaire (2 files)"]
    notice = next(m for m in stack.smtp.messages
                  if "submitted the intake questionnaire" in str(m.message["Subject"])
                  and client in str(m.message["Subject"]))
    html_part = notice.message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<script>" not in html_part and "&lt;script&gt;" in html_part

    _assert_answers_in_packet(stack, onboarding_id)
    _assert_answers_artifact(stack, run_id, onboarding_id)


def onboard_with_terms(stack: Stack, client: str) -> tuple[int, str]:
    """`handoff onboard` with terms and scope, so the client goes straight to intake."""
    import json

    result = stack.cli("onboard", "--client", client, "--segment", "smb", "--offer", "Growth",
                       "--owner", OWNER, "--backup", "va2@northwind.example",
                       "--contact", "pat@browserdental.example", "--terms", "SOW v2 signed",
                       "--scope", "SEO + ads", "--json")
    data = json.loads(result.stdout)
    assert "/runs/flow-run/" in data["flow"], data
    return int(data["id"]), data["flow"].rsplit("/", 1)[1]


def _assert_answers_in_packet(stack: Stack, onboarding_id: int) -> None:
    from db.playbook import load_playbook
    from db.session import session_factory
    from tasks.onboarding.packet import packet_sections

    playbook = load_playbook(Path(stack.env["HANDOFF_PLAYBOOK_PATH"]))
    with session_factory(stack.db_url)() as session, session.begin():
        sections = packet_sections(session, playbook, onboarding_id)
    intake = next(s for s in sections if s["key"] == "client_profile")
    rows = dict(intake["rows"])
    assert rows["Contacts and approvers: Day-to-day contact"] == "Pat Lee"
    assert rows["Brand assets: Brand guide"].startswith("brand-guide.pdf (pdf")
    assert rows["Intake questionnaire"].startswith("submitted through the portal")
    engine = create_engine(stack.db_url)
    with engine.connect() as conn:
        recorded_by = conn.execute(text(
            "SELECT recorded_by FROM artifacts WHERE onboarding_id = :i AND key = "
            "'intake_questionnaire_completed'"), {"i": onboarding_id}).scalar()
    engine.dispose()
    assert recorded_by == "client (portal)"


def _assert_answers_artifact(stack: Stack, run_id: str, onboarding_id: int) -> None:
    def artifact() -> dict[str, Any] | None:
        response = httpx.post(f"{stack.api_url}/artifacts/filter", timeout=10, json={
            "artifacts": {"key": {"any_": [f"intake-answers-{onboarding_id}"]}}})
        response.raise_for_status()
        found = response.json()
        return found[0] if found else None

    published = wait_until("the answers artifact on the run", artifact, timeout=60)
    assert published["flow_run_id"] == run_id
    assert "Pat Lee" in published["data"]
    assert "<script>" not in published["data"] and "&lt;script&gt;" in published["data"]
