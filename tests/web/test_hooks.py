"""Provider webhooks over real HTTP: the app served by uvicorn on loopback, the CRM's recorded
responses on loopback, the app database on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from db.models import Communication, DealLink, Event, Onboarding
from db.session import session_factory
from db.settings import get_settings
from tests.deals.crm_server import RecordedCrm
from tests.deals.hooks_client import SECRETS, body_of, hooks_app, serve
from tests.deals.hooks_client import post as send
from tests.deals.hooks_client import signed as sign


@dataclass
class Hooks:
    url: str
    crm: RecordedCrm


@pytest.fixture
def hooks(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooks]:
    with RecordedCrm() as crm, serve(hooks_app()) as server_url:
        env = {**SECRETS, "HANDOFF_HUBSPOT_WEBHOOK_URL": f"{server_url}/hooks/hubspot",
               "HANDOFF_HUBSPOT_TOKEN": "pat-test", "HANDOFF_HUBSPOT_API_URL": crm.url,
               "HANDOFF_PIPEDRIVE_API_TOKEN": "pd-test", "HANDOFF_PIPEDRIVE_API_URL": crm.url}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        yield Hooks(url=server_url, crm=crm)
    get_settings.cache_clear()


def signed(hooks: Hooks, source: str, body: bytes, *, age: float = 0) -> dict[str, str]:
    return sign(hooks.url, source, body, age=age)


def post(hooks: Hooks, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return send(hooks.url, source, body, headers)


def counts() -> tuple[int, int, int]:
    with session_factory()() as s:
        return (s.scalar(select(func.count()).select_from(Onboarding)) or 0,
                s.scalar(select(func.count()).select_from(DealLink)) or 0,
                s.scalar(select(func.count()).select_from(Event)) or 0)


WON = {"hubspot": ("hubspot_dealstage_won.json", "2001", "Acme Dental", "pat@acme.example"),
       "pipedrive": ("pipedrive_deal_won.json", "3101", "Blue Harbor Dental",
                     "morgan@blueharbor.example"),
       "stripe": ("stripe_checkout_session_completed.json", "cs_test_a1B2c3D4e5F6g7H8i9J0",
                  "Lantern Yoga", "owner@lanternyoga.example"),
       "generic": ("generic_won.json", "crm-7781", "Harbor Light Physio",
                   "dana@harborlight.example,ops@harborlight.example")}


@pytest.mark.parametrize("source", list(WON))
def test_a_signed_won_deal_becomes_one_onboarding(hooks: Hooks, source: str) -> None:
    name, deal_id, client, contacts = WON[source]
    body = body_of(name)
    response = post(hooks, source, body, signed(hooks, source, body))
    assert response.status_code == 200, response.text
    [created] = response.json()["onboardings"]
    assert created["created"] is True
    with session_factory()() as s:
        onboarding = s.get(Onboarding, created["id"])
        assert onboarding is not None
        assert (onboarding.client_name, onboarding.contact_emails) == (client, contacts)
        assert onboarding.stage == "close_confirmation"
        link = s.scalars(select(DealLink)).one()
        assert (link.source, link.external_id, link.via) == (source, deal_id, "webhook")
        kinds = list(s.scalars(select(Event.kind).where(Event.onboarding_id == onboarding.id)))
    assert "deal_won" in kinds and "onboarding_created" in kinds


@pytest.mark.parametrize("source", list(WON))
def test_five_parallel_replays_make_one_onboarding(hooks: Hooks, source: str) -> None:
    body = body_of(WON[source][0])
    headers = signed(hooks, source, body)
    with ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(lambda _: post(hooks, source, body, headers), range(5)))
    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    ids = {r.json()["onboardings"][0]["id"] for r in responses}
    created = [r.json()["onboardings"][0]["created"] for r in responses]
    assert len(ids) == 1 and created.count(True) == 1
    assert counts()[:2] == (1, 1)


def tamper(body: bytes) -> bytes:
    index = body.index(b'"', 10) + 1  # one byte inside the first string value
    return body[:index] + bytes([body[index] ^ 1]) + body[index + 1:]


@pytest.mark.parametrize("source", list(WON))
@pytest.mark.parametrize("fault", ["one-byte", "six-minutes-old", "no-secret", "unsigned"])
def test_unverified_requests_get_401_and_write_nothing(hooks: Hooks, source: str, fault: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    body = body_of(WON[source][0])
    headers = signed(hooks, source, body, age=360 if fault == "six-minutes-old" else 0)
    if fault == "one-byte":
        body = tamper(body)
    if fault == "unsigned":
        headers = {}
    if fault == "six-minutes-old" and source == "pipedrive":
        # Pipedrive signs nothing, so there is no timestamp: wrong basic auth instead.
        headers = {"Authorization": "Basic " + base64.b64encode(
            f"{SECRETS['HANDOFF_PIPEDRIVE_WEBHOOK_USER']}:wrong".encode()).decode()}
    if fault == "no-secret":
        for key in ("HUBSPOT_CLIENT_SECRET", "PIPEDRIVE_WEBHOOK_PASSWORD", "STRIPE_WEBHOOK_SECRET",
                    "GENERIC_WEBHOOK_SECRET"):
            monkeypatch.delenv(f"HANDOFF_{key}")
        get_settings.cache_clear()
    if fault == "one-byte" and source == "pipedrive":
        headers = {}  # the body is not signed; what is refused is the missing auth
    before = counts()
    response = post(hooks, source, body, headers)
    assert response.status_code == 401, response.text
    assert response.json() == {"error": "not verified"}
    assert counts() == before == (0, 0, 0)
    assert hooks.crm.requests == []  # not even read as data: the CRM was never asked


IGNORED = [("hubspot", "hubspot_other_events.json"), ("pipedrive", "pipedrive_deal_updated.json"),
           ("stripe", "stripe_checkout_session_unpaid.json"),
           ("stripe", "stripe_invoice_paid_renewal.json"), ("generic", "generic_lost.json")]


@pytest.mark.parametrize(("source", "name"), IGNORED)
def test_other_events_get_200_and_write_nothing(hooks: Hooks, source: str, name: str) -> None:
    body = body_of(name)
    response = post(hooks, source, body, signed(hooks, source, body))
    assert (response.status_code, response.json()) == (200, {"ignored": True})
    assert counts() == (0, 0, 0)


def test_oversized_body_gets_413(hooks: Hooks) -> None:
    from deployments.web.hooks import MAX_BODY

    body = json.dumps({"deal_id": "x", "status": "won", "pad": "x" * MAX_BODY}).encode()
    response = post(hooks, "generic", body, signed(hooks, "generic", body))
    assert response.status_code == 413
    # Streamed without a length, too.
    chunks = iter([body[i:i + 65536] for i in range(0, len(body), 65536)])
    streamed = httpx.post(f"{hooks.url}/hooks/generic", content=chunks, timeout=30,
                          headers=signed(hooks, "generic", body))
    assert streamed.status_code == 413
    assert counts() == (0, 0, 0)


def test_a_deal_that_cannot_be_mapped_is_refused_with_one_line(hooks: Hooks) -> None:
    payload = json.loads(body_of("generic_won.json"))
    payload["contacts"] = ["dana at harborlight"]
    body = json.dumps(payload).encode()
    for _ in range(2):  # the sender retries
        response = post(hooks, "generic", body, signed(hooks, "generic", body))
        assert response.status_code == 422
        assert response.json()["error"] == (
            "generic deal crm-7781: contact 'dana at harborlight' is not an email address like "
            "name@example.com")
    assert counts()[:2] == (0, 0)
    # Nothing of the deal is written; the deal lane's owner is told once.
    with session_factory()() as s:
        notices = list(s.scalars(select(Communication)))
    assert [(n.template, n.recipients, n.idempotency_key) for n in notices] == [
        ("deal_refused", "va@northwind.example", "deal-refused:generic:crm-7781")]
    assert "contact 'dana at harborlight' is not an email address" in notices[0].body_text


def test_a_deal_id_that_is_not_one_line_is_refused(hooks: Hooks) -> None:
    payload = json.loads(body_of("generic_won.json"))
    payload["deal_id"] = "crm-1\nBcc: everyone@example.com"
    body = json.dumps(payload).encode()
    response = post(hooks, "generic", body, signed(hooks, "generic", body))
    assert response.status_code == 422
    assert "generic deal id" in response.json()["error"]
    assert counts() == (0, 0, 0)


def test_crm_down_gets_503_so_the_provider_retries(hooks: Hooks) -> None:
    hooks.crm.down = True
    body = body_of("hubspot_dealstage_won.json")
    response = post(hooks, "hubspot", body, signed(hooks, "hubspot", body))
    assert response.status_code == 503
    assert counts() == (0, 0, 0)
    hooks.crm.down = False
    response = post(hooks, "hubspot", body, signed(hooks, "hubspot", body))
    assert response.status_code == 200 and counts()[:2] == (1, 1)
