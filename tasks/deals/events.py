"""Which verified deliveries mean "deal won", and what they say about the deal.

Each reader takes the parsed JSON of a delivery that already passed verification and returns the
won deals in it (possibly none: everything else is acknowledged and ignored). A reader keeps only
what the payload holds; whatever is missing is fetched from the CRM when the deal is mapped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from db.playbook import Deals
from db.validation import HandoffError

SOURCES = ("hubspot", "pipedrive", "stripe", "generic")


@dataclass(frozen=True)
class WonDeal:
    """A won deal as a provider described it; None means "not in the payload"."""

    source: str
    external_id: str
    client: str | None = None
    contacts: tuple[str, ...] = ()
    crm_owner: str | None = None
    closed_at: str | None = None  # ISO 8601 or unix seconds, parsed when mapped
    fields: dict[str, str] = field(default_factory=dict)  # segment, offer, terms, scope, owner…
    person_id: str | None = None  # Pipedrive: the contact person to fetch
    org_id: str | None = None  # Pipedrive: the organization (the client's name)


def parse_json(body: bytes) -> Any:
    """The delivery's JSON, or a HandoffError naming what is wrong with it."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HandoffError(f"body is not JSON: {exc}") from None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def hubspot_wins(payload: Any, deals: Deals) -> list[WonDeal]:
    """HubSpot sends a batch of events: keep deal.propertyChange of dealstage to the won stage."""
    events = payload if isinstance(payload, list) else [payload]
    wins: dict[str, WonDeal] = {}
    for event in events:
        if not isinstance(event, dict):
            continue
        kind = event.get("subscriptionType")
        # Legacy apps send deal.propertyChange; apps on the new platform object.propertyChange
        # with the deal's object type id.
        is_deal = kind == "deal.propertyChange" or (kind == "object.propertyChange"
                                                    and event.get("objectTypeId") == "0-3")
        if (is_deal and event.get("propertyName") == "dealstage"
                and _text(event.get("propertyValue")) == deals.hubspot_won_stage
                and _text(event.get("objectId"))):
            deal_id = str(event["objectId"])
            wins[deal_id] = WonDeal(source="hubspot", external_id=deal_id,
                                    closed_at=_text(event.get("occurredAt")))
    return list(wins.values())


def pipedrive_wins(payload: Any, deals: Deals) -> list[WonDeal]:
    """Pipedrive webhooks v2: a deal change whose status became won (v1 shape also read)."""
    if not isinstance(payload, dict):
        return []
    meta = payload.get("meta") or {}
    current = payload.get("data") or payload.get("current") or {}
    previous = payload.get("previous") or {}
    if not isinstance(meta, dict) or not isinstance(current, dict):
        return []
    entity = meta.get("entity") or meta.get("object")
    action = meta.get("action")
    if entity != "deal" or action not in ("change", "updated", "create", "added"):
        return []
    if current.get("status") != "won" or (isinstance(previous, dict)
                                          and previous.get("status") == "won"):
        return []
    deal_id = _text(current.get("id"))
    if deal_id is None:
        return []
    custom = current.get("custom_fields") or {}
    values = {name: _text((custom.get(key) or {}).get("value") if isinstance(custom.get(key), dict)
                          else custom.get(key)) or _text(current.get(key))
              for name, key in deals.fields.model_dump().items()}
    return [WonDeal(
        source="pipedrive", external_id=deal_id, client=_text(current.get("org_name")),
        crm_owner=_text(current.get("owner_id") or current.get("user_id")),
        closed_at=_text(current.get("won_time") or current.get("close_time")),
        fields={k: v for k, v in values.items() if v},
        person_id=_text(current.get("person_id")), org_id=_text(current.get("org_id")))]


def stripe_wins(payload: Any, deals: Deals) -> list[WonDeal]:
    """A paid Checkout Session, or the paid first invoice of a subscription."""
    if not isinstance(payload, dict):
        return []
    kind = payload.get("type")
    obj = (payload.get("data") or {}).get("object") if isinstance(payload.get("data"), dict) \
        else None
    if not isinstance(obj, dict):
        return []
    if kind == "checkout.session.completed" and obj.get("payment_status") == "paid":
        details = obj.get("customer_details") or {}
        name, email = details.get("name"), details.get("email")
    elif kind == "invoice.paid" and obj.get("billing_reason") == "subscription_create":
        name, email = obj.get("customer_name"), obj.get("customer_email")
    else:
        return []
    # A subscription bought through Checkout sends both events: the subscription is the deal.
    deal_id = _text(obj.get("subscription")) or _text(obj.get("id"))
    if deal_id is None:
        return []
    metadata = obj.get("metadata") or {}
    values = {n: _text(metadata.get(k)) for n, k in deals.fields.model_dump().items()}
    return [WonDeal(source="stripe", external_id=deal_id, client=_text(name),
                    contacts=tuple(e for e in [_text(email)] if e),
                    closed_at=_text(obj.get("created") or payload.get("created")),
                    fields={k: v for k, v in values.items() if v})]


GENERIC_FIELDS = ("segment", "offer", "terms", "scope", "kickoff_by", "first_milestone",
                  "owner", "backup", "client_tz")


def generic_wins(payload: Any, deals: Deals) -> list[WonDeal]:
    """The documented generic shape (README "Deals"): one deal, `status` "won"."""
    if not isinstance(payload, dict) or payload.get("status") != "won":
        return []
    deal_id = _text(payload.get("deal_id"))
    if deal_id is None:
        raise HandoffError("deal_id is missing; expected the CRM's id of the deal")
    contacts = payload.get("contacts")
    if isinstance(contacts, str):
        contacts = contacts.replace(";", ",").split(",")
    if not isinstance(contacts, list):
        contacts = []
    values = {k: _text(payload.get(k)) for k in GENERIC_FIELDS}
    return [WonDeal(source="generic", external_id=deal_id, client=_text(payload.get("client")),
                    contacts=tuple(str(c) for c in contacts if _text(c)),
                    closed_at=_text(payload.get("closed_at")),
                    fields={k: v for k, v in values.items() if v})]


READERS = {"hubspot": hubspot_wins, "pipedrive": pipedrive_wins, "stripe": stripe_wins,
           "generic": generic_wins}
