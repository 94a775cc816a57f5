"""`handoff onboard`, `status`, `import`: clients in, and where each one stands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from db.playbook import get_playbook
from db.validation import parse_date
from deployments.cli.common import ByOpt, JsonOpt, emit, guarded, happened, start, transaction
from tasks.onboarding import records

app = typer.Typer()


@app.command("onboard")
@guarded
def onboard(
    client: Annotated[str, typer.Option(help="Client name.")],
    segment: Annotated[str, typer.Option(help="Client segment.")],
    offer: Annotated[str, typer.Option(help="Offer or package name.")],
    owner: Annotated[str, typer.Option(help="Onboarding owner's email.")],
    backup: Annotated[str, typer.Option(help="Backup owner's email.")],
    contact: Annotated[list[str], typer.Option(help="Client contact email (repeatable).")],
    closed_at: Annotated[str | None, typer.Option(help="When the deal closed (ISO 8601).")] = None,
    kickoff_by: Annotated[str | None, typer.Option(help="Committed kickoff date.")] = None,
    first_milestone: Annotated[str | None, typer.Option(help="First delivery milestone.")] = None,
    terms: Annotated[str | None, typer.Option(help="Deal terms as confirmed (records "
                                              "deal_terms_confirmed).")] = None,
    scope: Annotated[str | None, typer.Option(help="Scope and timeline (records "
                                              "scope_and_timeline_captured).")] = None,
    client_tz: Annotated[str | None, typer.Option(
        "--client-tz", help="The client's IANA timezone (e.g. Australia/Sydney): their mail "
        "waits for their working hours too. Default: the business's.")] = None,
    no_flow: Annotated[bool, typer.Option("--no-flow", help="Only record; don't start the "
                                          "client's flow run.")] = False,
    by: ByOpt = "va",
    as_json: JsonOpt = False,
) -> None:
    """Record a closed deal and start the client's onboarding flow."""
    new = records.NewOnboarding.parse(
        client=client, segment=segment, offer=offer, owner=owner, backup=backup,
        contacts=contact,
        closed_at=records.check_close(get_playbook(), happened(closed_at, "--closed-at")),
        kickoff_by=parse_date(kickoff_by, "--kickoff-by"),
        first_milestone=parse_date(first_milestone, "--first-milestone"),
        terms=terms, scope=scope, client_tz=client_tz,
    )
    with transaction() as (session, playbook):
        onboarding = records.create_onboarding(session, playbook, new, actor=by)
        onboarding_id = onboarding.id
    flow_note = "not started (--no-flow)" if no_flow else start(onboarding_id)
    emit(as_json, {"id": onboarding_id, "client": new.client_name, "flow": flow_note},
         f"onboarding {onboarding_id} created for {new.client_name}\nflow: {flow_note}")


@app.command("status")
@guarded
def status(
    onboarding_id: Annotated[int | None, typer.Argument(help="Onboarding id; all when omitted.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage, owner, next action and date, open blockers, missing artifacts, SLA clocks."""
    from tasks.mail.alarm import current_alarm
    from tasks.onboarding.status import describe, portfolio

    with transaction(read_only=True) as (session, playbook):
        alarm = current_alarm(session)
        banner = f"!! {alarm.banner}\n" if alarm else ""
        if onboarding_id is None:
            rows = portfolio(session, playbook)
            human = "\n".join(
                f"{r['id']:>5}  {r['client'][:28]:<28} {r['stage']:<20} {r['status']:<7} "
                f"next: {r['next_action_due'] or '-'}  {r['blocker'] or ''}"
                + ("  [demo]" if r["demo"] else "") for r in rows
            ) or "no onboardings yet: start one with 'handoff onboard --help'"
            if alarm and as_json:
                typer.echo(banner.strip(), err=True)  # the JSON stays a list of onboardings
            emit(as_json, rows, banner + human)
            return
        card = describe(session, playbook, onboarding_id)
    card["transport_alarm"] = alarm.banner if alarm else None
    emit(as_json, card, banner + card["text"])


@app.command("import")
@guarded
def import_deals(
    path: Annotated[Path, typer.Argument(help="CSV of closed deals.")],
    no_flow: Annotated[bool, typer.Option("--no-flow", help="Only record.")] = False,
    by: ByOpt = "import",
    as_json: JsonOpt = False,
) -> None:
    """Import closed deals from a CSV, all rows or none."""
    from tasks.onboarding.importer import read_deals

    playbook = get_playbook()
    deals = read_deals(path, playbook.calendar.tz)
    for line, deal in enumerate(deals, start=2):
        records.check_close(playbook, deal.closed_at, f"{path.name} line {line}: closed_at")
    with transaction() as (session, playbook):
        ids = [records.create_onboarding(session, playbook, d, actor=by).id for d in deals]
    flows = [] if no_flow else [start(i) for i in ids]
    emit(as_json, {"imported": ids, "flows": flows},
         f"imported {len(ids)} onboardings: {', '.join(map(str, ids))}")
