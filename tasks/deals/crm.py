"""The one small client for the CRMs' APIs: what a webhook left out, and won deals since a cursor.

HubSpot (private app token, CRM v3 objects and search) and Pipedrive (API token, API v2). Every
call has a timeout; a CRM that is down or refuses raises CrmUnavailable, so a webhook answers
503 (the provider retries) and a poll keeps its cursor.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import httpx

from db.playbook import Deals
from db.settings import Settings
from tasks.deals.events import WonDeal, _text

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
PAGE = 100


class CrmUnavailable(Exception):
    """The CRM could not be asked (not configured, down, or refused); try again later."""


class CrmClient:
    """HubSpot and Pipedrive behind one door; `complete` fills in what a deal lacks."""

    def __init__(self, settings: Settings, deals: Deals,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._settings = settings
        self._deals = deals
        self._http = httpx.Client(timeout=TIMEOUT, transport=transport)

    def __enter__(self) -> CrmClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, source: str, method: str, path: str, **kwargs: Any) -> Any:
        settings = self._settings
        if source == "hubspot":
            token, base = settings.hubspot_token, settings.hubspot_api_url
            headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        else:
            token, base = settings.pipedrive_api_token, settings.pipedrive_api_url
            headers = {"x-api-token": token.get_secret_value()} if token else {}
        if token is None:
            raise CrmUnavailable(f"no {source} API token configured "
                                 f"(HANDOFF_{source.upper()}_{'TOKEN' if source == 'hubspot' else 'API_TOKEN'})")  # noqa: E501
        try:
            response = self._http.request(method, base.rstrip("/") + path, headers=headers,
                                          **kwargs)
        except httpx.HTTPError as exc:
            raise CrmUnavailable(f"{source} API unreachable: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise CrmUnavailable(f"{source} API answered {response.status_code} to {path}")
        try:
            return response.json()
        except ValueError:
            raise CrmUnavailable(f"{source} API answered {path} with something not JSON") from None

    # -- filling in a deal -----------------------------------------------------------------

    def complete(self, deal: WonDeal) -> WonDeal:
        """The deal with its client name, contacts and fields fetched where the payload had none."""
        if deal.source == "hubspot":
            return self.hubspot_deal(deal.external_id, closed_at=deal.closed_at)
        if deal.source == "pipedrive":
            return self._pipedrive_contacts(deal)
        return deal

    def hubspot_deal(self, deal_id: str, closed_at: str | None = None) -> WonDeal:
        """A HubSpot deal, its owner, its company's name and its contacts' e-mails."""
        names = list(self._deals.fields.model_dump().values())
        raw = self._call("hubspot", "GET", f"/crm/v3/objects/deals/{deal_id}", params={
            "properties": ",".join(["dealname", "closedate", "hubspot_owner_id", *names]),
            "associations": "contacts,companies"})
        props = raw.get("properties") or {}
        links = raw.get("associations") or {}
        contact_ids = [r["id"] for r in (links.get("contacts") or {}).get("results", [])]
        company_ids = [r["id"] for r in (links.get("companies") or {}).get("results", [])]
        emails = [p.get("email") for p in self._hubspot_batch("contacts", contact_ids, "email")]
        companies = [p.get("name") for p in self._hubspot_batch("companies", company_ids[:1],
                                                                "name")]
        values = {n: _text(props.get(k)) for n, k in self._deals.fields.model_dump().items()}
        return WonDeal(
            source="hubspot", external_id=str(raw.get("id", deal_id)),
            client=_text(companies[0] if companies else None) or _text(props.get("dealname")),
            contacts=tuple(e for e in emails if e), crm_owner=_text(props.get("hubspot_owner_id")),
            closed_at=_text(props.get("closedate")) or closed_at,
            fields={k: v for k, v in values.items() if v})

    def _hubspot_batch(self, kind: str, ids: list[str], prop: str) -> list[dict[str, Any]]:
        if not ids:
            return []
        raw = self._call("hubspot", "POST", f"/crm/v3/objects/{kind}/batch/read",
                         json={"properties": [prop], "inputs": [{"id": i} for i in ids]})
        return [r.get("properties") or {} for r in raw.get("results", [])]

    def _pipedrive_contacts(self, deal: WonDeal) -> WonDeal:
        contacts, client = deal.contacts, deal.client
        if not contacts and deal.person_id:
            person = self._call("pipedrive", "GET", f"/api/v2/persons/{deal.person_id}")["data"]
            emails = person.get("emails") or []
            primary = sorted(emails, key=lambda e: not e.get("primary"))
            contacts = tuple(e["value"] for e in primary if _text(e.get("value")))[:1]
        if not client and deal.org_id:
            org = self._call("pipedrive", "GET", f"/api/v2/organizations/{deal.org_id}")["data"]
            client = _text(org.get("name"))
        return replace(deal, contacts=contacts, client=client)

    # -- polling ---------------------------------------------------------------------------

    def hubspot_won_since(self, cursor_ms: int) -> tuple[list[WonDeal], int]:
        """Deals in the won stage modified after the cursor (ms), oldest first, and the new
        cursor (the last modification seen)."""
        wins, newest, after = [], cursor_ms, None
        while True:
            body: dict[str, Any] = {
                "filterGroups": [{"filters": [
                    {"propertyName": "dealstage", "operator": "EQ",
                     "value": self._deals.hubspot_won_stage},
                    {"propertyName": "hs_lastmodifieddate", "operator": "GT",
                     "value": str(cursor_ms)}]}],
                "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
                "properties": ["hs_lastmodifieddate"], "limit": PAGE}
            if after:
                body["after"] = after
            raw = self._call("hubspot", "POST", "/crm/v3/objects/deals/search", json=body)
            for row in raw.get("results", []):
                wins.append(WonDeal(source="hubspot", external_id=str(row["id"])))
                newest = max(newest, _millis((row.get("properties") or {})
                                             .get("hs_lastmodifieddate")))
            after = ((raw.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return wins, newest

    def pipedrive_won_since(self, cursor: str | None) -> tuple[list[WonDeal], str | None]:
        """Won deals updated since the cursor (RFC 3339), oldest first, and the new cursor."""
        from tasks.deals.events import pipedrive_wins

        wins, newest, page = [], cursor, None
        while True:
            params: dict[str, Any] = {"status": "won", "sort_by": "update_time",
                                      "sort_direction": "asc", "limit": PAGE}
            if cursor:
                params["updated_since"] = cursor
            if page:
                params["cursor"] = page
            raw = self._call("pipedrive", "GET", "/api/v2/deals", params=params)
            for row in raw.get("data") or []:
                wins.extend(pipedrive_wins({"meta": {"entity": "deal", "action": "change"},
                                            "data": row}, self._deals))
                updated = _text(row.get("update_time"))
                if updated and (newest is None or updated > newest):
                    newest = updated
            page = (raw.get("additional_data") or {}).get("next_cursor")
            if not page:
                return wins, newest


def _millis(value: Any) -> int:
    """HubSpot's timestamps: ISO 8601 or epoch milliseconds."""
    text = _text(value)
    if text is None:
        return 0
    if text.isdigit():
        return int(text)
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
