"""Which deliveries mean "won", what the CRM client fills in (recorded responses on loopback),
and the mapping to the same NewOnboarding as the CLI and the CSV import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db.playbook import Playbook
from db.settings import Settings
from db.validation import HandoffError
from tasks.deals.crm import CrmClient, CrmUnavailable
from tasks.deals.events import READERS, WonDeal
from tasks.deals.intake import to_new_onboarding
from tests.deals.crm_server import RecordedCrm

DATA = Path(__file__).resolve().parents[1] / "data" / "deals"


def load(name: str) -> object:
    return json.loads((DATA / name).read_text())


@pytest.mark.parametrize(("source", "name", "deal_id"), [
    ("hubspot", "hubspot_dealstage_won.json", "2001"),
    ("pipedrive", "pipedrive_deal_won.json", "3101"),
    ("stripe", "stripe_checkout_session_completed.json", "cs_test_a1B2c3D4e5F6g7H8i9J0"),
    ("stripe", "stripe_invoice_paid_first.json", "sub_1QvXk4Lx9aBcDeFg"),
    ("generic", "generic_won.json", "crm-7781"),
])
def test_won_events(playbook: Playbook, source: str, name: str, deal_id: str) -> None:
    wins = READERS[source](load(name), playbook.deals)
    assert [w.external_id for w in wins] == [deal_id]


@pytest.mark.parametrize(("source", "name"), [
    ("hubspot", "hubspot_other_events.json"),
    ("pipedrive", "pipedrive_deal_updated.json"),
    ("stripe", "stripe_checkout_session_unpaid.json"),
    ("stripe", "stripe_invoice_paid_renewal.json"),
    ("generic", "generic_lost.json"),
    ("hubspot", "generic_won.json"), ("pipedrive", "hubspot_dealstage_won.json"),
    ("stripe", "pipedrive_deal_won.json"), ("generic", "stripe_invoice_paid_first.json"),
])
def test_everything_else_is_ignored(playbook: Playbook, source: str, name: str) -> None:
    assert READERS[source](load(name), playbook.deals) == []


def test_a_pipedrive_deal_already_won_is_not_won_again(playbook: Playbook) -> None:
    payload = load("pipedrive_deal_won.json")
    payload["previous"] = {"status": "won", "value": 4000}  # type: ignore[index]
    assert READERS["pipedrive"](payload, playbook.deals) == []


def crm_settings(url: str, **extra: object) -> Settings:
    return Settings(hubspot_token="pat-na1-test", pipedrive_api_token="pd-test",  # type: ignore[arg-type]
                    hubspot_api_url=url, pipedrive_api_url=url, **extra)


def test_hubspot_deal_is_completed_from_the_api(playbook: Playbook) -> None:
    with RecordedCrm() as crm, CrmClient(crm_settings(crm.url), playbook.deals) as client:
        win = READERS["hubspot"](load("hubspot_dealstage_won.json"), playbook.deals)[0]
        deal = client.complete(win)
    assert deal.client == "Acme Dental"
    assert deal.contacts == ("pat@acme.example",)
    assert deal.crm_owner == "71734185"
    assert deal.fields["offer"] == "Growth retainer"
    assert deal.closed_at == "2026-11-26T15:30:00.000Z"
    first = crm.requests[0]
    assert first["headers"]["Authorization"] == "Bearer pat-na1-test"
    assert "associations=contacts%2Ccompanies" in first["query"]
    assert crm.requests[1]["json"] == {"properties": ["email"], "inputs": [{"id": "151"}]}


def test_pipedrive_person_and_organization_are_fetched(playbook: Playbook) -> None:
    with RecordedCrm() as crm, CrmClient(crm_settings(crm.url), playbook.deals) as client:
        win = READERS["pipedrive"](load("pipedrive_deal_won.json"), playbook.deals)[0]
        deal = client.complete(win)
    assert (deal.client, deal.contacts) == ("Blue Harbor Dental", ("morgan@blueharbor.example",))
    assert deal.fields == {"segment": "smb", "offer": "Local SEO"}
    assert {r["headers"]["x-api-token"] for r in crm.requests} == {"pd-test"}


def test_polling_reads_won_deals_since_the_cursor(playbook: Playbook) -> None:
    with RecordedCrm() as crm, CrmClient(crm_settings(crm.url), playbook.deals) as client:
        hub, hub_cursor = client.hubspot_won_since(1_700_000_000_000)
        pipe, pipe_cursor = client.pipedrive_won_since("2026-11-20T00:00:00Z")
    assert [d.external_id for d in hub] == ["2001"] and hub_cursor == 1795707001000
    assert [d.external_id for d in pipe] == ["3101"] and pipe_cursor == "2026-11-26T15:30:00Z"
    search = crm.requests[0]["json"]
    assert {"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"} in \
        search["filterGroups"][0]["filters"]
    assert {"propertyName": "hs_lastmodifieddate", "operator": "GT",
            "value": "1700000000000"} in search["filterGroups"][0]["filters"]
    assert "updated_since=2026-11-20T00%3A00%3A00Z" in crm.requests[1]["query"]
    assert "status=won" in crm.requests[1]["query"]


def test_crm_down_or_unconfigured_is_unavailable(playbook: Playbook) -> None:
    win = WonDeal(source="hubspot", external_id="2001")
    with RecordedCrm() as crm, CrmClient(crm_settings(crm.url), playbook.deals) as client:
        crm.down = True
        with pytest.raises(CrmUnavailable, match="503"):
            client.complete(win)
    with CrmClient(Settings(), playbook.deals) as client, \
            pytest.raises(CrmUnavailable, match="HANDOFF_HUBSPOT_TOKEN"):
        client.complete(win)


def test_mapping_uses_lane_owner_table_and_defaults(playbook: Playbook) -> None:
    deal = WonDeal(source="stripe", external_id="cs_1", client="Lantern Yoga",
                   contacts=("owner@lanternyoga.example",), closed_at="1795706990",
                   fields={"terms": "Paid in full", "scope": "Care plan"})
    new = to_new_onboarding(deal, playbook)
    lane = playbook.lanes[playbook.deals.lane]
    assert (new.owner_email, new.backup_email) == (lane.owner, lane.backup)
    assert (new.segment, new.offer) == (playbook.deals.segment, playbook.deals.offer)
    assert new.closed_at.isoformat() == "2026-11-26T15:29:50+00:00"
    assert new.terms is None and new.scope is None  # the VA confirms them at close
    table = playbook.deals.model_copy(update={
        "owners": [{"source": "stripe", "crm_owner": "acct_9", "owner": "x@northwind.example",
                    "backup": "y@northwind.example"}], "terms_from_deal": True})
    trusting = playbook.model_copy(update={"deals": type(playbook.deals).model_validate(
        table.model_dump())})
    owned = to_new_onboarding(WonDeal(**{**deal.__dict__, "crm_owner": "acct_9"}), trusting)
    assert (owned.owner_email, owned.backup_email) == ("x@northwind.example",
                                                       "y@northwind.example")
    assert (owned.terms, owned.scope) == ("Paid in full", "Care plan")


def test_mapping_refuses_with_the_clis_line(playbook: Playbook) -> None:
    bad = WonDeal(source="generic", external_id="crm-1", client="Acme",
                  contacts=("not-an-email",))
    with pytest.raises(HandoffError) as caught:
        to_new_onboarding(bad, playbook)
    assert str(caught.value) == ("generic deal crm-1: contact 'not-an-email' is not an email "
                                 "address like name@example.com")
    with pytest.raises(HandoffError, match="client is required"):
        to_new_onboarding(WonDeal(source="stripe", external_id="cs_2",
                                  contacts=("a@b.example",)), playbook)


def test_a_deal_carries_the_clients_timezone(playbook: Playbook) -> None:
    """The generic shape's `client_tz`, or the CRM property / Stripe metadata key that
    deals.fields.client_tz names; a bad zone refuses the deal, naming it."""
    (deal,) = READERS["generic"]({"status": "won", "deal_id": "crm-2", "client": "Koala Co",
                                  "contacts": ["ops@koala.example"],
                                  "client_tz": "Australia/Sydney"}, playbook.deals)
    assert to_new_onboarding(deal, playbook).client_tz == "Australia/Sydney"
    paid = load("stripe_checkout_session_completed.json")
    paid["data"]["object"]["metadata"] = {"handoff_client_tz": "Australia/Sydney",  # type: ignore[index]
                                          "tz": "Europe/Berlin"}
    (shipped,) = READERS["stripe"](paid, playbook.deals)
    assert to_new_onboarding(shipped, playbook).client_tz == "Australia/Sydney"
    renamed = playbook.deals.model_copy(update={
        "fields": playbook.deals.fields.model_copy(update={"client_tz": "tz"})})
    (berlin,) = READERS["stripe"](paid, renamed)
    assert to_new_onboarding(berlin, playbook).client_tz == "Europe/Berlin"
    with pytest.raises(HandoffError, match="^generic deal crm-2: client-tz 'Sydney' is not an "
                                           "IANA timezone"):
        to_new_onboarding(WonDeal(**{**deal.__dict__, "fields": {"client_tz": "Sydney"}}),
                          playbook)


def test_new_platform_hubspot_events_are_read_for_deals_only(playbook: Playbook) -> None:
    event = {"subscriptionType": "object.propertyChange", "objectTypeId": "0-3",
             "propertyName": "dealstage", "propertyValue": "closedwon", "objectId": 2001}
    assert [w.external_id for w in READERS["hubspot"]([event], playbook.deals)] == ["2001"]
    contact = {**event, "objectTypeId": "0-1"}
    assert READERS["hubspot"]([contact, {**event, "propertyValue": "appointmentscheduled"}],
                              playbook.deals) == []
