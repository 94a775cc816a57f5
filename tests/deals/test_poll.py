"""The polling alternative against recorded CRM responses: same mapping, one onboarding per deal,
the cursor kept in the database and moved only forward."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import DealCursor, DealLink, Onboarding
from db.playbook import Playbook
from db.session import session_factory
from db.settings import Settings, get_settings
from tasks.deals.crm import CrmClient, CrmUnavailable
from tasks.deals.poll import configured_sources, poll_source
from tests.deals.crm_server import RecordedCrm


def test_each_source_polls_once_per_deal_and_keeps_its_cursor(
        db_url: str, playbook: Playbook, monkeypatch: pytest.MonkeyPatch) -> None:
    with RecordedCrm() as crm:
        monkeypatch.setenv("HANDOFF_HUBSPOT_TOKEN", "pat-test")
        monkeypatch.setenv("HANDOFF_PIPEDRIVE_API_TOKEN", "pd-test")
        for name in ("HUBSPOT", "PIPEDRIVE"):
            monkeypatch.setenv(f"HANDOFF_{name}_API_URL", crm.url)
        get_settings.cache_clear()
        assert configured_sources(get_settings()) == ["hubspot", "pipedrive"]
        first = [poll_source(s) for s in ("hubspot", "pipedrive")]
        again = [poll_source(s) for s in ("hubspot", "pipedrive")]
        searches = [r["json"] for r in crm.requests if r["path"].endswith("/search")]
        listings = [r["query"] for r in crm.requests if r["path"] == "/api/v2/deals"]
    assert [[r.created for r in p.recorded] for p in first] == [[True], [True]]
    assert [[r.created for r in p.recorded] for p in again] == [[False], [False]]
    with session_factory()() as s:
        names = sorted(s.scalars(select(Onboarding.client_name)))
        links = sorted(s.execute(select(DealLink.source, DealLink.external_id, DealLink.via)))
        cursors = dict(s.execute(select(DealCursor.source, DealCursor.cursor)).all())
    assert names == ["Acme Dental", "Blue Harbor Dental"]
    assert links == [("hubspot", "2001", "poll"), ("pipedrive", "3101", "poll")]
    assert cursors == {"hubspot": "1795707001000", "pipedrive": "2026-11-26T15:30:00Z"}
    # The second poll asked from the stored cursors.
    assert searches[1]["filterGroups"][0]["filters"][1]["value"] == "1795707001000"
    assert "updated_since=2026-11-26T15%3A30%3A00Z" in listings[1]


def test_a_crm_that_is_down_keeps_the_cursor(db_url: str, playbook: Playbook) -> None:
    with RecordedCrm() as crm:
        crm.down = True
        settings = Settings(hubspot_token="t", hubspot_api_url=crm.url)  # type: ignore[arg-type]
        with CrmClient(settings, playbook.deals) as client, pytest.raises(CrmUnavailable):
            poll_source("hubspot", crm=client)
    with session_factory()() as s:
        assert s.scalar(select(func.count()).select_from(DealCursor)) == 0
        assert s.scalar(select(func.count()).select_from(Onboarding)) == 0
