"""The `handoff` command line: what a VA types all day. Every command takes --json for scripts."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.orm import Session

from db.playbook import Playbook, PlaybookError, get_playbook
from db.session import is_current, session_factory, upgrade
from db.settings import get_settings
from db.validation import HandoffError, parse_date, parse_instant
from tasks.onboarding import records

app = typer.Typer(help="handoff: client onboarding from 'deal closed' to 'ready to deliver'.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="The database: migrate, back up, restore.", no_args_is_help=True)
playbook_app = typer.Typer(help="The operating model in deployments/playbook.yaml.",
                           no_args_is_help=True)
artifact_app = typer.Typer(help="Artifacts and checklist items a stage needs.",
                           no_args_is_help=True)
blocker_app = typer.Typer(help="Blockers, by the playbook's taxonomy.", no_args_is_help=True)
qa_app = typer.Typer(help="Handoff QA checks.", no_args_is_help=True)
kickoff_app = typer.Typer(help="The kickoff call.", no_args_is_help=True)
interruption_app = typer.Typer(help="Founder interruptions.", no_args_is_help=True)
sla_app = typer.Typer(help="SLA exceptions (a reason is mandatory).", no_args_is_help=True)
decision_app = typer.Typer(help="Decisions reserved to the founder.", no_args_is_help=True)
owner_app = typer.Typer(help="Owners: out of office, backups.", no_args_is_help=True)
followup_app = typer.Typer(help="Client follow-ups and replies.", no_args_is_help=True)
incident_app = typer.Typer(help="Delivery incidents after handoff.", no_args_is_help=True)
action_app = typer.Typer(help="Corrective actions from KPI threshold breaks.", no_args_is_help=True)
for sub, name in [(db_app, "db"), (playbook_app, "playbook"), (artifact_app, "artifact"),
                  (blocker_app, "blocker"), (qa_app, "qa"), (kickoff_app, "kickoff"),
                  (interruption_app, "interruption"), (sla_app, "sla"),
                  (decision_app, "decision"), (owner_app, "owner"), (followup_app, "followup"),
                  (incident_app, "incident"), (action_app, "action")]:
    app.add_typer(sub, name=name)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AtOpt = Annotated[str | None, typer.Option("--at", help="When it happened (ISO 8601; default "
                                           "now; no offset = playbook timezone).")]
ByOpt = Annotated[str, typer.Option("--by", help="Who recorded it.")]
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """One clear line on stderr and a non-zero exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def guarded(func: F) -> F:
    """Turn refused requests into one stderr line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (HandoffError, PlaybookError) as exc:
            raise fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def emit(as_json: bool, data: Any, human: str) -> None:
    """Print for a person or for a script."""
    if as_json:
        typer.echo(json.dumps(data, default=_jsonable, indent=2))
    else:
        typer.echo(human)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


@contextmanager
def transaction() -> Iterator[tuple[Session, Playbook]]:
    """A session in one transaction with the playbook; refused actions roll everything back."""
    playbook = get_playbook()
    if not is_current():
        raise HandoffError(
            f"the database at {get_settings().database_url} is not set up; run 'handoff db upgrade'"
        )
    with session_factory()() as session, session.begin():
        yield session, playbook


def when(value: str | None, field: str = "--at") -> dt.datetime:
    """Parse a --at style option in the playbook's timezone (default now)."""
    return parse_instant(value, get_playbook().calendar.tz, field)


def _nudge(onboarding_id: int) -> str:
    """Tell the client's flow run that something changed; say plainly what happened."""
    from tasks.prefect.runs import nudge_run

    return nudge_run(onboarding_id)


# -- db ------------------------------------------------------------------------------------


@db_app.command("upgrade")
@guarded
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Create or migrate the database schema to the latest revision."""
    upgrade()
    url = get_settings().database_url
    emit(as_json, {"database": url, "revision": "head"}, f"database is up to date: {url}")


@db_app.command("backup")
@guarded
def db_backup(
    target: Annotated[Path, typer.Argument(help="Where to write the backup file.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Back up the embedded SQLite database online (PostgreSQL: use pg_dump)."""
    from db.backup import backup

    pages = backup(get_settings().database_url, target, force=force)
    emit(as_json, {"backup": str(target), "pages": pages}, f"backed up to {target} ({pages} pages)")


@db_app.command("restore")
@guarded
def db_restore(
    source: Annotated[Path, typer.Argument(help="A file written by 'handoff db backup'.")],
    as_json: JsonOpt = False,
) -> None:
    """Restore the embedded SQLite database from a backup (stop the runner first)."""
    from db.backup import restore

    pages = restore(get_settings().database_url, source)
    emit(as_json, {"restored": str(source), "pages": pages},
         f"restored from {source} ({pages} pages)")


# -- playbook ------------------------------------------------------------------------------


@playbook_app.command("show")
@guarded
def playbook_show(as_json: JsonOpt = False) -> None:
    """Stages, required artifacts, SLAs, blockers and thresholds."""
    playbook = get_playbook()
    if as_json:
        emit(True, playbook.model_dump(mode="json", by_alias=True), "")
        return
    lines = [f"playbook {playbook.version} — {playbook.business.name}",
             f"calendar: {', '.join(playbook.calendar.workdays)} "
             f"{playbook.calendar.hours.start:%H:%M}–{playbook.calendar.hours.end:%H:%M} "
             f"{playbook.calendar.timezone}, holidays {playbook.calendar.holidays.country}", ""]
    for number, stage in enumerate(playbook.stages, 1):
        lines.append(f"{number}. {stage.name} [{stage.key}] lane {stage.lane}, SLA "
                     f"{stage.sla.within:g} {stage.sla.unit.value.replace('_', ' ')}")
        for item in playbook.required_items(stage.key):
            lines.append(f"     - {item.key}: {item.label} (lane {item.lane})")
        for gate in stage.gates:
            lines.append(f"     * gate: {gate.value}")
    lines.append("")
    lines.append("SLAs:")
    for key, sla in playbook.slas.items():
        rhythm = (f"within {sla.within:g}" if sla.within else
                  f"every {sla.every:g}" if sla.every else
                  f"every {sla.every_min:g}–{sla.every_max:g}")
        lines.append(f"  {key}: {rhythm} {sla.unit.value.replace('_', ' ')}")
    lines.append("")
    lines.append("blocker types: " + ", ".join(playbook.blockers))
    lines.append("founder decisions: " + ", ".join(playbook.founder_boundaries))
    emit(False, None, "\n".join(lines))


# -- onboarding ----------------------------------------------------------------------------


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
    no_flow: Annotated[bool, typer.Option("--no-flow", help="Only record; don't start the "
                                          "client's flow run.")] = False,
    by: ByOpt = "va",
    as_json: JsonOpt = False,
) -> None:
    """Record a closed deal and start the client's onboarding flow."""
    new = records.NewOnboarding.parse(
        client=client, segment=segment, offer=offer, owner=owner, backup=backup,
        contacts=contact, closed_at=when(closed_at, "--closed-at"),
        kickoff_by=parse_date(kickoff_by, "--kickoff-by"),
        first_milestone=parse_date(first_milestone, "--first-milestone"),
        terms=terms, scope=scope,
    )
    with transaction() as (session, playbook):
        onboarding = records.create_onboarding(session, playbook, new, actor=by)
        onboarding_id = onboarding.id
    flow_note = "not started (--no-flow)" if no_flow else _start(onboarding_id)
    emit(as_json, {"id": onboarding_id, "client": new.client_name, "flow": flow_note},
         f"onboarding {onboarding_id} created for {new.client_name}\nflow: {flow_note}")


def _start(onboarding_id: int) -> str:
    from tasks.prefect.runs import start_run

    return start_run(onboarding_id)


@app.command("status")
@guarded
def status(
    onboarding_id: Annotated[int | None, typer.Argument(help="Onboarding id; all when omitted.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage, owner, next action and date, open blockers, missing artifacts, SLA clocks."""
    from tasks.onboarding.status import describe, portfolio

    with transaction() as (session, playbook):
        if onboarding_id is None:
            rows = portfolio(session, playbook)
            human = "\n".join(
                f"{r['id']:>5}  {r['client'][:28]:<28} {r['stage']:<20} {r['status']:<7} "
                f"next: {r['next_action_due'] or '-'}  {r['blocker'] or ''}" for r in rows
            ) or "no onboardings yet: start one with 'handoff onboard --help'"
            emit(as_json, rows, human)
            return
        card = describe(session, playbook, onboarding_id)
    emit(as_json, card, card["text"])


# -- facts ---------------------------------------------------------------------------------


@artifact_app.command("add")
@guarded
def artifact_add(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    keys: Annotated[list[str], typer.Argument(help="Artifact key(s) (see 'handoff playbook "
                                                   "show').")],
    note: Annotated[str | None, typer.Option(help="Note or link.")] = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record that artifacts or checklist items exist (all of them, or none)."""
    recorded_at = when(at)
    results = []
    with transaction() as (session, playbook):
        for key in keys:
            artifact, created = records.record_artifact(session, playbook, onboarding_id, key,
                                                        by=by, at=recorded_at, note=note)
            results.append({"key": key, "created": created, "recorded_at": artifact.recorded_at})
    flow = _nudge(onboarding_id)
    lines = [f"{r['key']} {'recorded' if r['created'] else 'was already recorded'} for "
             f"onboarding {onboarding_id}" for r in results]
    data: dict[str, Any] = {"onboarding": onboarding_id, "artifacts": results, "flow": flow}
    if len(results) == 1:
        data.update(results[0])
    emit(as_json, data, "\n".join(lines) + f"\nflow: {flow}")


@blocker_app.command("open")
@guarded
def blocker_open(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    blocker_type: Annotated[str, typer.Option("--type", help="Blocker type from the playbook.")],
    critical: Annotated[bool, typer.Option("--critical", help="A critical dependency.")] = False,
    affects_timeline: Annotated[bool, typer.Option("--affects-timeline",
                                                   help="It moves the timeline.")] = False,
    note: Annotated[str | None, typer.Option(help="What is blocked.")] = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open a blocker."""
    opened_at = when(at)
    with transaction() as (session, playbook):
        blocker = records.open_blocker(session, playbook, onboarding_id, blocker_type,
                                       critical=critical, note=note, by=by, at=opened_at,
                                       affects_timeline=affects_timeline)
        blocker_id = blocker.id
    emit(as_json, {"blocker": blocker_id, "onboarding": onboarding_id, "type": blocker_type},
         f"blocker {blocker_id} ({blocker_type}{', critical' if critical else ''}) opened "
         f"for onboarding {onboarding_id}")


@blocker_app.command("resolve")
@guarded
def blocker_resolve(
    blocker_id: Annotated[int, typer.Argument(help="Blocker id.")],
    note: Annotated[str | None, typer.Option(help="How it was resolved.")] = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve a blocker."""
    resolved_at = when(at)
    with transaction() as (session, playbook):
        blocker = records.resolve_blocker(session, playbook, blocker_id, by=by, at=resolved_at,
                                          note=note)
        onboarding_id = blocker.onboarding_id
    flow = _nudge(onboarding_id)
    emit(as_json, {"blocker": blocker_id, "resolved": True, "flow": flow},
         f"blocker {blocker_id} resolved\nflow: {flow}")


@qa_app.command("record")
@guarded
def qa_record(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    passed: Annotated[bool | None, typer.Option("--pass/--fail", help="QA outcome.")] = None,
    reason: Annotated[str | None, typer.Option(help="Rework reason (required on --fail).")]
    = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a QA check (--pass or --fail --reason)."""
    if passed is None:
        raise HandoffError("say --pass or --fail")
    checked_at = when(at)
    with transaction() as (session, _playbook):
        review = records.record_qa(session, onboarding_id, passed=passed, reason=reason, by=by,
                                   at=checked_at)
        review_id = review.id
    flow = _nudge(onboarding_id)
    emit(as_json, {"qa": review_id, "passed": passed, "flow": flow},
         f"QA {'passed' if passed else 'failed'} recorded for onboarding {onboarding_id}\n"
         f"flow: {flow}")


@kickoff_app.command("schedule")
@guarded
def kickoff_schedule(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    kickoff_at: Annotated[str, typer.Option("--when", help="Kickoff time (ISO 8601).")],
    by: ByOpt = "va",
    as_json: JsonOpt = False,
) -> None:
    """Schedule or move the kickoff call (a confirmation with a calendar invite goes out)."""
    start = parse_instant(kickoff_at, get_playbook().calendar.tz, "--when", default_now=False)
    with transaction() as (session, playbook):
        records.schedule_kickoff(session, playbook, onboarding_id, kickoff_at=start, by=by,
                                 at=dt.datetime.now(dt.UTC))
    flow = _nudge(onboarding_id)
    emit(as_json, {"onboarding": onboarding_id, "kickoff_at": start, "flow": flow},
         f"kickoff for onboarding {onboarding_id} set to {start.isoformat()}\nflow: {flow}")


@interruption_app.command("log")
@guarded
def interruption_log(
    category: Annotated[str, typer.Option(help="Interruption category (playbook).")],
    avoidable: Annotated[bool | None, typer.Option("--avoidable/--required",
                                                   help="Could the system have handled it?")]
    = None,
    onboarding_id: Annotated[int | None, typer.Option("--onboarding", help="Onboarding id.")]
    = None,
    lane: Annotated[str | None, typer.Option(help="Lane it came from.")] = None,
    note: Annotated[str | None, typer.Option(help="What happened.")] = None,
    by: ByOpt = "founder",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Count one founder interruption."""
    if avoidable is None:
        raise HandoffError("say --avoidable or --required")
    logged_at = when(at)
    with transaction() as (session, playbook):
        row = records.log_interruption(session, playbook, category=category, avoidable=avoidable,
                                       onboarding_id=onboarding_id, lane=lane, note=note,
                                       at=logged_at, by=by)
        row_id = row.id
    emit(as_json, {"interruption": row_id, "category": category, "avoidable": avoidable},
         f"interruption {row_id} logged ({category}, {'avoidable' if avoidable else 'required'})")


@sla_app.command("exception")
@guarded
def sla_exception(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    sla: Annotated[str, typer.Option(help="SLA or stage key.")],
    reason: Annotated[str | None, typer.Option(help="Rationale (mandatory).")] = None,
    by: ByOpt = "va",
    as_json: JsonOpt = False,
) -> None:
    """Log a justified SLA exception."""
    with transaction() as (session, playbook):
        row = records.log_sla_exception(session, playbook, onboarding_id, sla_key=sla,
                                        reason=reason, by=by, at=dt.datetime.now(dt.UTC))
        row_id = row.id
    emit(as_json, {"exception": row_id}, f"SLA exception {row_id} logged for {sla}")


@decision_app.command("record")
@guarded
def decision_record(
    boundary: Annotated[str, typer.Option(help="Founder boundary key (playbook).")],
    decision: Annotated[str, typer.Option(help="What was decided.")],
    by: Annotated[str, typer.Option(help="Decider's email (must be the founder).")],
    onboarding_id: Annotated[int | None, typer.Option("--onboarding", help="Onboarding id.")]
    = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a decision reserved to the founder."""
    decided_at = when(at)
    with transaction() as (session, playbook):
        row = records.record_founder_decision(session, playbook, boundary=boundary,
                                              decision=decision, decided_by=by,
                                              onboarding_id=onboarding_id, at=decided_at)
        row_id = row.id
    emit(as_json, {"decision": row_id, "boundary": boundary},
         f"decision {row_id} recorded ({boundary})")


@owner_app.command("away")
@guarded
def owner_away(
    email: Annotated[str, typer.Argument(help="Owner's email.")],
    until: Annotated[str, typer.Option(help="Back on this date (YYYY-MM-DD).")],
    by: ByOpt = "va",
    as_json: JsonOpt = False,
) -> None:
    """Mark an owner out of office; the backup owner takes over."""
    back = parse_date(until, "--until")
    if back is None:
        raise HandoffError("--until is required (a date like 2026-12-01)")
    with transaction() as (session, playbook):
        row = records.set_owner_away(session, email, until=back, at=dt.datetime.now(dt.UTC),
                                     by=by, tz=playbook.calendar.tz)
        address = row.email
    emit(as_json, {"email": address, "until": back},
         f"{address} is away until {back.isoformat()}; backups take over")


@followup_app.command("log")
@guarded
def followup_log(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    kind: Annotated[str, typer.Option(help="followup_request, response or clarification.")]
    = "followup_request",
    template: Annotated[str | None, typer.Option(help="Message that prompted it.")] = None,
    note: Annotated[str | None, typer.Option(help="What the client said.")] = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Log a client follow-up request (or a reply, or a clarification request)."""
    logged_at = when(at)
    with transaction() as (session, _playbook):
        row = records.log_client_response(session, onboarding_id, kind=kind, template=template,
                                          note=note, at=logged_at, by=by)
        row_id = row.id
    emit(as_json, {"id": row_id, "kind": kind}, f"{kind} {row_id} logged")


@incident_app.command("log")
@guarded
def incident_log(
    onboarding_id: Annotated[int, typer.Argument(help="Onboarding id.")],
    severity: Annotated[str, typer.Option(help="minor, major or critical.")] = "minor",
    note: Annotated[str | None, typer.Option(help="What happened.")] = None,
    by: ByOpt = "va",
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Log a delivery incident after handoff."""
    logged_at = when(at)
    with transaction() as (session, _playbook):
        row = records.log_incident(session, onboarding_id, severity=severity, note=note,
                                   at=logged_at, by=by)
        row_id = row.id
    emit(as_json, {"incident": row_id}, f"incident {row_id} logged")


@action_app.command("close")
@guarded
def action_close(
    action_id: Annotated[int, typer.Argument(help="Corrective action id.")],
    note: Annotated[str | None, typer.Option(help="What was done.")] = None,
    by: ByOpt = "founder",
    as_json: JsonOpt = False,
) -> None:
    """Close a corrective action with a note."""
    with transaction() as (session, _playbook):
        records.close_action(session, action_id, note=note, by=by, at=dt.datetime.now(dt.UTC))
    emit(as_json, {"action": action_id, "closed": True}, f"corrective action {action_id} closed")


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

    deals = read_deals(path, get_playbook().calendar.tz)
    with transaction() as (session, playbook):
        ids = [records.create_onboarding(session, playbook, d, actor=by).id for d in deals]
    flows = [] if no_flow else [_start(i) for i in ids]
    emit(as_json, {"imported": ids, "flows": flows},
         f"imported {len(ids)} onboardings: {', '.join(map(str, ids))}")


@app.command("sweep")
@guarded
def sweep(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Sweep as if it were this time "
                                              "(ISO 8601; default now).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the reminder and escalation sweeps now, in-process."""
    from tasks.comms.sweeps import sweep_now

    reminders = sweep_now(as_of, messages=True, escalations=False)
    escalations = sweep_now(as_of, messages=False, escalations=True)
    emit(as_json, {"reminders": reminders, "escalations": escalations},
         f"reminders:   {_summary(reminders)}\nescalations: {_summary(escalations)}")


def _summary(report: dict[str, Any]) -> str:
    if "skipped" in report:
        return f"skipped ({report['skipped']})"
    queued = int(report["queued_messages"]) + int(report["queued_escalations"])
    return (f"{report['clients']} active clients, {queued} queued, {report['sent']} sent, "
            f"{report['retried']} to retry, {report['failed']} failed")


@app.command("reconcile")
@guarded
def reconcile_cmd(as_json: JsonOpt = False) -> None:
    """Start missing client runs, resume runs whose condition is met, restart dead runs."""
    from tasks.prefect.reconcile import reconcile_runs
    from tasks.prefect.runs import server_reachable, unreachable_note

    if not server_reachable():
        raise HandoffError(unreachable_note())
    report = reconcile_runs()
    data = {"started": report.started, "resumed": report.resumed, "restarted": report.restarted}
    emit(as_json, data, f"started {report.started}, resumed {report.resumed}, "
                        f"restarted {report.restarted}")


from deployments.cli_reports import register as _register_reports  # noqa: E402

_register_reports(app)


def main() -> None:
    """Entry point for `python -m deployments.cli`."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
