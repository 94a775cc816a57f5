"""`handoff deals list|poll`: won deals from CRMs and webhooks, and the poll run by hand."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from db.validation import HandoffError
from deployments.cli.common import JsonOpt, emit, guarded, transaction

app = typer.Typer()


@app.command("list")
@guarded
def deals_list(as_json: JsonOpt = False) -> None:
    """Every won deal received, by source and deal id, with the onboarding it started."""
    from sqlalchemy import select

    from db.models import DealLink

    with transaction() as (session, _playbook):
        rows = [{"source": d.source, "deal": d.external_id, "onboarding": d.onboarding_id,
                 "via": d.via, "received_at": d.received_at}
                for d in session.scalars(select(DealLink).order_by(DealLink.id))]
    human = "\n".join(f"{r['source']:<10} {r['deal']:<32} onboarding {r['onboarding']:<6} "
                      f"via {r['via']}" for r in rows) or "no won deals received yet"
    emit(as_json, rows, human)


@app.command("poll")
@guarded
def deals_poll(
    source: Annotated[list[str] | None, typer.Option(
        "--source", help="hubspot or pipedrive (repeatable; default every configured CRM).")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask the CRMs for won deals since their cursor now (what crm-poll does every 10 minutes)."""
    from db.settings import get_settings
    from tasks.deals.crm import CrmUnavailable
    from tasks.deals.poll import configured_sources, poll_source
    from tasks.deals.receive import start_runs

    configured = configured_sources(get_settings())
    known = ", ".join(configured) or "none (set HANDOFF_HUBSPOT_TOKEN or " \
        "HANDOFF_PIPEDRIVE_API_TOKEN)"
    for name in source or []:
        if name not in configured:
            raise HandoffError(f"--source {name!r} is not a configured CRM; configured: {known}")
    results: dict[str, dict[str, Any]] = {}
    for name in source or configured:
        try:
            report = poll_source(name)
        except CrmUnavailable as exc:
            raise HandoffError(f"{exc}; the cursor is unchanged, try again later") from None
        start_runs(report.recorded)
        results[name] = {"seen": report.seen, "refused": report.refused,
                         "created": [r.onboarding_id for r in report.recorded if r.created]}
    human = "\n".join(f"{n}: {r['seen']} won deal(s), new onboardings {r['created'] or 'none'}"
                      + "".join(f"\n  not imported: {x}" for x in r["refused"])
                      for n, r in results.items()) or "no CRM configured to poll"
    emit(as_json, results, human)
