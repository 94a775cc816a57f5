"""New clients without a terminal: the Prefect UI's start form, and the CRM poll."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Failed, State
from pydantic import Field

from db.validation import HandoffError
from tasks.deals.steps import create_client_onboarding, poll_crm, pollable_sources, start_client_run


@flow(name="new-client", flow_run_name="new client: {client}")
def new_client(
    client: Annotated[str, Field(description="Client name, as it appears on the contract.")],
    segment: Annotated[str, Field(description="Client segment, e.g. smb or enterprise.")],
    offer: Annotated[str, Field(description="Offer or package sold.")],
    owner: Annotated[str, Field(description="Onboarding owner's e-mail.")],
    backup: Annotated[str, Field(description="Backup owner's e-mail (not the owner).")],
    contacts: Annotated[list[str], Field(description="Client contact e-mails.", min_length=1)],
    closed_at: Annotated[dt.datetime | None, Field(
        description="When the deal closed; empty means now.")] = None,
    kickoff_by: Annotated[dt.date | None, Field(
        description="Committed kickoff date.")] = None,
    first_milestone: Annotated[dt.date | None, Field(
        description="First delivery milestone.")] = None,
    terms: Annotated[str | None, Field(
        description="Deal terms as confirmed. With scope, confirms the close at once.")] = None,
    scope: Annotated[str | None, Field(
        description="Scope and timeline. Without both, the client waits at close "
                    "confirmation.")] = None,
) -> int | State:
    """Record a closed deal and start the client's onboarding, as `handoff onboard` does."""
    try:
        onboarding_id = create_client_onboarding(
            str(flow_run.id), client=client, segment=segment, offer=offer, owner=owner,
            backup=backup, contacts=contacts, closed_at=closed_at, kickoff_by=kickoff_by,
            first_milestone=first_milestone, terms=terms, scope=scope)
    except HandoffError as exc:
        return Failed(message=str(exc))  # the CLI's one line, as the run's state message
    start_client_run(onboarding_id)
    return onboarding_id


@flow(name="crm-poll")
def crm_poll() -> dict[str, list[int]]:
    """Won deals from every CRM with an API token, since each one's cursor; start their runs."""
    created = {source: poll_crm(source) for source in pollable_sources()}
    for onboarding_ids in created.values():
        for onboarding_id in onboarding_ids:
            start_client_run(onboarding_id)
    return created
