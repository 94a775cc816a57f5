"""The deal flows' steps (Prefect tasks): create a client from the UI form, poll the CRMs,
start a client's run. They take and return plain values; the database is the record."""

from __future__ import annotations

import datetime as dt

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from db.playbook import get_playbook
from db.session import transaction
from db.settings import get_settings
from db.validation import parse_date, parse_instant
from tasks.deals.events import WonDeal
from tasks.deals.intake import record_won_deal
from tasks.deals.poll import configured_sources, poll_source
from tasks.onboarding.records import NewOnboarding


@task(name="create client onboarding", cache_policy=NO_CACHE)
def create_client_onboarding(form_id: str, *, client: str, segment: str, offer: str,
                             owner: str, backup: str, contacts: list[str],
                             closed_at: dt.datetime | None, kickoff_by: dt.date | None,
                             first_milestone: dt.date | None, terms: str | None,
                             scope: str | None) -> int:
    """Validate the form as the CLI does and record the onboarding, once per form run."""
    playbook = get_playbook()
    new = NewOnboarding.parse(
        client=client, segment=segment, offer=offer, owner=owner, backup=backup,
        contacts=contacts, closed_at=parse_instant(closed_at, playbook.calendar.tz,
                                                   "--closed-at"),
        kickoff_by=parse_date(kickoff_by, "--kickoff-by"),
        first_milestone=parse_date(first_milestone, "--first-milestone"),
        terms=terms, scope=scope)
    # The form's flow run id is the "deal id": a retried run finds its onboarding, not a second.
    deal = WonDeal(source="form", external_id=form_id)
    with transaction() as session:
        recorded = record_won_deal(session, playbook, deal, new, via="prefect-ui")
    get_run_logger().info("onboarding %s %s for %s", recorded.onboarding_id,
                          "created" if recorded.created else "already existed", new.client_name)
    return recorded.onboarding_id


@task(name="start client run", cache_policy=NO_CACHE)
def start_client_run(onboarding_id: int) -> str:
    """Start the client's onboarding run (if Prefect refuses, the reconcile flow will)."""
    from tasks.prefect.pacing import start_run

    note = start_run(onboarding_id)
    get_run_logger().info("onboarding %s: %s", onboarding_id, note)
    return note


@task(name="poll CRM for won deals", task_run_name="poll {source}", cache_policy=NO_CACHE)
def poll_crm(source: str) -> list[int]:
    """Record the won deals since the source's cursor; return the onboardings created."""
    report = poll_source(source)
    logger = get_run_logger()
    for refusal in report.refused:
        logger.error("not imported: %s", refusal)
    logger.info("%s: %d won deal(s) since the cursor, %d new onboarding(s)", source,
                report.seen, sum(r.created for r in report.recorded))
    return [r.onboarding_id for r in report.recorded if r.created]


def pollable_sources() -> list[str]:
    """The CRMs with an API token configured."""
    return configured_sources(get_settings())
