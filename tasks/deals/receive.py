"""From verified deliveries (or polled deals) to committed onboardings, then their runs."""

from __future__ import annotations

import logging
from typing import Any

from db.models import utcnow
from db.playbook import Playbook, get_playbook
from db.session import session_factory, transaction
from db.settings import get_settings
from db.validation import HandoffError, clean_name
from tasks.comms import keys
from tasks.deals.crm import CrmClient
from tasks.deals.events import READERS, WonDeal
from tasks.deals.intake import Recorded, linked_onboarding, record_won_deal, to_new_onboarding

log = logging.getLogger(__name__)


def wins_in(source: str, payload: Any) -> list[WonDeal]:
    """The won deals a verified delivery announces (none for every other event)."""
    return READERS[source](payload, get_playbook().deals)


def take_deals(deals: list[WonDeal], *, via: str, crm: CrmClient | None = None) -> list[Recorded]:
    """Record each deal once: skip known ones before asking the CRM, map, commit each on its own.

    Raises HandoffError (a deal that cannot become an onboarding: nothing of it is written but
    one notice to the deal lane's owner, once per deal) or CrmUnavailable (ask again later);
    deals before it in the list stay committed.
    """
    playbook, factory = get_playbook(), session_factory()
    results = []
    owned = crm is None
    client = crm or CrmClient(get_settings(), playbook.deals)
    try:
        for deal in deals:
            with factory.begin() as session:
                known = linked_onboarding(session, deal.source, deal.external_id)
            if known is not None:
                results.append(Recorded(known, created=False))
                continue
            clean_name(deal.external_id, f"{deal.source} deal id")
            complete = client.complete(deal)
            try:
                new = to_new_onboarding(complete, playbook)
            except HandoffError as exc:
                tell_owner_refused(playbook, deal, str(exc))
                raise
            with factory.begin() as session:
                results.append(record_won_deal(session, playbook, complete, new, via=via))
    finally:
        if owned:
            client.__exit__(None, None, None)
    return results


def tell_owner_refused(playbook: Playbook, deal: WonDeal, problem: str) -> None:
    """One notice per refused deal to the deal lane's owner (and its chat channels)."""
    from tasks.mail.outbox import Draft, business_context, enqueue

    owner = str(playbook.lanes[playbook.deals.lane].owner)
    prefix = f"{deal.source} deal {deal.external_id}: "
    with transaction() as session:
        enqueue(session, playbook, Draft(
            onboarding_id=None, template="deal_refused", recipients=[owner],
            key=keys.deal_refused(deal.source, deal.external_id),
            context={"business": business_context(playbook),
                     "deal": {"source": deal.source, "id": deal.external_id,
                              "problem": problem.removeprefix(prefix)}}), now=utcnow())


def start_runs(recorded: list[Recorded]) -> None:
    """Start the runs of onboardings created just now; best effort (reconcile catches up)."""
    from tasks.prefect.pacing import start_run

    for item in recorded:
        if not item.created:
            continue
        try:
            note = start_run(item.onboarding_id)
        except Exception as exc:  # the record is committed; reconcile starts the run later
            note = f"not started ({type(exc).__name__}); the reconcile flow will start it"
        log.info("onboarding %s: %s", item.onboarding_id, note)
