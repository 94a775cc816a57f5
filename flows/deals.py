"""New clients without a terminal: the Prefect UI's start form, and the CRM poll."""

# No `from __future__ import annotations` here: a run's process receives new_client by value
# (cloudpickle), and pydantic checks its parameters against the annotations, which must then be
# the types themselves, not names of globals left behind (tests/unit/test_flow_pickling.py).
import datetime as dt

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Failed, State
from pydantic import Field

from db.validation import HandoffError
from tasks.deals.steps import create_client_onboarding, poll_crm, pollable_sources, start_client_run


@flow(name="new-client", flow_run_name="new client: {client}")
def new_client(
    client: str = Field(..., description="Client name, as on the contract."),
    segment: str = Field(..., description="Client segment, e.g. smb or enterprise."),
    offer: str = Field(..., description="Offer or package sold."),
    owner: str = Field(..., description="Onboarding owner's e-mail."),
    backup: str = Field(..., description="Backup owner's e-mail (not the owner)."),
    contacts: list[str] = Field(..., min_length=1, description="Client contact e-mails."),
    closed_at: dt.datetime | None = Field(None, description="When the deal closed; "
                                          "None means now."),
    kickoff_by: dt.date | None = Field(None, description="Committed kickoff date."),
    first_milestone: dt.date | None = Field(None, description="First delivery milestone."),
    terms: str = Field("", description="Deal terms as confirmed. With scope, the close is "
                       "confirmed at once; without both, the client waits at close "
                       "confirmation."),
    scope: str = Field("", description="Scope and timeline."),
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
