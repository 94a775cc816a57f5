"""Every key in deployments/playbook.yaml does something: change it, and a result changes.

KEY_TESTS below is the table key path → test. A key path is the YAML path with list items as
`[]` and names a business chooses (lanes, SLAs, blockers, checklists, portal stages...) as `*`.
Most entries are CASES of `test_changing_a_key_changes_the_result`: the shipped playbook with one
value edited, run through the real rule (the sweeps' pure functions over a snapshot, the exit
rule, the business calendar, the KPI thresholds, the deal mapping, the portal questionnaire),
gives a different result than the shipped one. `test_every_key_in_the_playbook_has_a_test` walks
the real file and fails for a key path missing from the table, so a key added later without a
test fails here.

Loading: a key the code needs, removed, and a key it does not know, added, are refused at load
naming it (`test_a_missing_or_unknown_key_is_refused_naming_it`).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Blocker, Onboarding
from db.playbook import Playbook, PlaybookError, TimeUnit, load_playbook
from db.session import session_factory
from tasks.calendar.clock import due_after
from tasks.comms.cadences import client_missing, due_messages
from tasks.comms.escalations import due_escalations
from tasks.comms.snapshot import Client, SentMessage, Snapshot
from tasks.onboarding import records
from tasks.onboarding.exits import ExitFacts, exit_problems_of
from tasks.onboarding.records import next_action
from tests.factories import new_onboarding

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((ROOT / "deployments" / "playbook.yaml").read_text())
MON = dt.datetime(2026, 11, 16, 15, 0, tzinfo=dt.UTC)  # Monday 10:00 New York
NAMED = {"lanes", "checklists", "slas", "blockers", "founder_boundaries", "risks",
         "alerts"}  # top-level maps whose keys a business names
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)


def key_paths(node: Any, path: tuple[str, ...] = ()) -> set[str]:
    """Every key path of a playbook tree, names a business chooses as `*`, list items `[]`."""
    if isinstance(node, dict) and node:
        out: set[str] = set()
        for k, v in node.items():
            named = (len(path) == 1 and path[0] in NAMED) or path == ("portal", "stages")
            out |= key_paths(v, (*path, "*" if named else str(k)))
        return out
    if isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
        return set().union(*(key_paths(x, (*path[:-1], path[-1] + "[]")) for x in node))
    return {".".join(path)}


def edited(path: str, value: Any) -> Playbook:
    """The shipped playbook with the value at `path` (dots; list indexes as numbers) replaced."""
    raw = copy.deepcopy(SHIPPED)
    node = raw
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = value
    return Playbook.model_validate(raw)


# -- one client, as the sweeps see it -------------------------------------------------------

def _client(stage: str = "close_confirmation", entered: dt.datetime = MON, *,
            artifacts: dict[str, dt.datetime] | None = None, sent: tuple[str, ...] = (),
            kickoff_at: dt.datetime | None = None, blockers: tuple[Blocker, ...] = (),
            last_response: dt.datetime | None = None,
            kickoff_by: dt.date = dt.date(2026, 12, 4)) -> Client:
    row = Onboarding(id=1, client_name="Acme Dental", segment="smb", offer="Growth retainer",
                     owner_email="va@northwind.example", backup_email="va2@northwind.example",
                     contact_emails="pat@acme.example", stage=stage, stage_entered_at=entered,
                     status="active", closed_at=MON, kickoff_at=kickoff_at, kickoff_by=kickoff_by,
                     first_milestone=None, next_action=None, next_action_due=None)
    messages = [SentMessage(template=t, key=f"{t}:1:{n}", status="sent",
                            sent_at=entered + (n + 1) * H, created_at=entered, cycle=n)
                for n, t in enumerate(sent)]
    return Client(row=row, artifacts=artifacts or {}, messages=messages, blockers=list(blockers),
                  last_response=last_response)


def _blocker(kind: str, *, critical: bool = False, affects_timeline: bool = False) -> Blocker:
    return Blocker(id=7, onboarding_id=1, type=kind, critical=critical, note="waiting",
                   owner_email="va@northwind.example", opened_at=MON, opened_by="va",
                   resolved_at=None, affects_timeline=affects_timeline)


def _drafts(pb: Playbook, client: Client, as_of: dt.datetime) -> list[tuple[Any, ...]]:
    snapshot = Snapshot(clients=[client], away={}, keys=set())
    return [(d.template, d.key, tuple(d.recipients), d.due_at, d.sla_key,
             str(d.context.get("blocker") or d.context.get("rule") or ""),
             str(d.context.get("business")), str(d.context.get("missing")))
            for d in due_messages(pb, snapshot, as_of) + due_escalations(pb, snapshot, as_of)]


def at_close(pb: Playbook) -> Any:
    """A new client an hour after the close: the first stage's on_enter messages."""
    return _drafts(pb, _client(), MON + H)


def after_close(pb: Playbook) -> Any:
    """A client just moved into intake: the on_exit of the stage it left, intake's on_enter."""
    return _drafts(pb, _client("intake_completion", MON + 2 * H, sent=("welcome",)), MON + 3 * H)


def reminding(pb: Playbook) -> Any:
    """A silent client in intake, a day and a half after the intake request."""
    return _drafts(pb, _client("intake_completion", sent=("intake_request",)), MON + 31 * H)


def replied(pb: Playbook) -> Any:
    """The same client, who answered an hour ago: the reply pauses the reminders."""
    return _drafts(pb, _client("intake_completion", sent=("intake_request",),
                               last_response=MON + 30 * H), MON + 31 * H)


def unanswered(pb: Playbook) -> Any:
    """Two reminders unanswered, days later: the no-response escalation."""
    return _drafts(pb, _client("intake_completion", sent=(
        "intake_request", "missing_info_reminder", "missing_info_reminder")), MON + 6 * D)


def kickoff_unset(pb: Playbook) -> Any:
    """In kickoff alignment since Wednesday with no kickoff, the next Monday."""
    return _drafts(pb, _client("kickoff_alignment", MON + 2 * D), MON + 7 * D)


def kickoff_set(pb: Playbook) -> Any:
    """A kickoff planned: its confirmation, due by the scheduling SLA."""
    return _drafts(pb, _client("kickoff_alignment", MON + 2 * D, kickoff_at=MON + 8 * D),
                   MON + 2 * D + H)


def kickoff_held(pb: Playbook) -> Any:
    """The kickoff call was held an hour ago: the recap."""
    return _drafts(pb, _client("kickoff_alignment", MON, artifacts={
        "kickoff_call_held": MON + 2 * D}), MON + 2 * D + H)


def kickoff_late(pb: Playbook) -> Any:
    """The committed kickoff date passed with no kickoff held."""
    return _drafts(pb, _client("kickoff_alignment", MON, kickoff_by=dt.date(2026, 11, 17)),
                   MON + 3 * D)


def in_setup(pb: Playbook) -> Any:
    """Three business days into setup: the progress update."""
    return _drafts(pb, _client("setup_execution", MON), MON + 3 * D)


def blocked(pb: Playbook) -> Any:
    """A critical missing-access blocker, three days open: its ladder and the 48-hour rule."""
    return _drafts(pb, _client("intake_completion", sent=("intake_request",),
                               blockers=(_blocker("missing_access", critical=True),)),
                   MON + 3 * D)


def scope_blocked(pb: Playbook) -> Any:
    """A scope-ambiguity blocker that moves the timeline: the founder's decision is asked."""
    return _drafts(pb, _client("intake_completion", sent=("intake_request",), blockers=(
        _blocker("scope_ambiguity", affects_timeline=True),)), MON + 1 * D)


# -- the other rules a key feeds ---------------------------------------------------------------

def next_step(pb: Playbook) -> Any:
    """The one next action and its due in each stage two days in, with nothing recorded and
    with the stage's artifacts recorded (its checklist items next)."""
    return [next_action(pb, s.key, have, MON + 2 * D, MON) for s in pb.stages
            for have in (set(), {a.key for a in s.artifacts})]


FIRST_ITEMS = {stage["artifacts"][0]["key"] for stage in SHIPPED["stages"]}


def exit_rule(pb: Playbook) -> Any:
    """Why a client with only the shipped first item of each stage, and no QA, may not leave."""
    return [exit_problems_of(pb, s.key, ExitFacts(have=FIRST_ITEMS,
                                                  critical=[(7, "missing_access")]))
            for s in pb.stages]


def client_owes(pb: Playbook) -> Any:
    """What the client owes in intake, in the words a client message uses."""
    return client_missing(pb, _client("intake_completion"))


CALENDAR_STARTS = (
    dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC),  # Wed 15:00 NY, before Thanksgiving
    dt.datetime(2026, 12, 23, 20, 0, tzinfo=dt.UTC),  # Wed before the closed 24 December
    dt.datetime(2026, 4, 17, 20, 0, tzinfo=dt.UTC),  # Fri before Patriots' Day (MA only)
    dt.datetime(2026, 11, 20, 13, 30, tzinfo=dt.UTC),  # Fri 08:30 NY, before opening
    dt.datetime(2026, 11, 20, 21, 30, tzinfo=dt.UTC),  # Fri 16:30 NY, before closing
)


def business_clock(pb: Playbook) -> Any:
    """One business day and two business hours after moments near the calendar's edges."""
    return [(due_after(pb, t, 1, TimeUnit.BUSINESS_DAYS),
             due_after(pb, t, 2, TimeUnit.BUSINESS_HOURS)) for t in CALENDAR_STARTS]


def thresholds(pb: Playbook) -> Any:
    """The KPI thresholds over six weeks in which every metric rises steadily."""
    from tasks.reporting.kpis.triggers import evaluate_thresholds

    weeks = 6
    series = pd.DataFrame({
        "median_close_to_kickoff_days": [5, 5, 5, 5, 7, 9],
        "handoff_rework_rate": [0.05] * 5 + [0.12],
        "repeat_followup_requests": list(range(weeks)),
        "first_30_day_incidents": list(range(weeks)),
        "checklist_completion_rate": [0.95] * weeks,
    })
    return [(b.key, b.metric, b.title, b.action, b.owner_lane, b.limit)
            for b in evaluate_thresholds(pb, series)]


def won_deal(pb: Playbook) -> Any:
    """A generic won deal with terms and no owner: who runs it, with what defaults."""
    from tasks.deals.events import WonDeal
    from tasks.deals.intake import to_new_onboarding

    deal = WonDeal(source="pipedrive", external_id="9", client="Acme", crm_owner="42",
                   contacts=("pat@acme.example",), closed_at="2026-11-16T10:00:00+00:00",
                   fields={"terms": "12 months", "scope": "Site"})
    return to_new_onboarding(deal, pb)


def crm_payloads(pb: Playbook) -> Any:
    """A HubSpot stage change to closedwon, and Stripe metadata, as won deals."""
    from tasks.deals.events import hubspot_wins, stripe_wins

    hubspot = [{"subscriptionType": "deal.propertyChange", "propertyName": "dealstage",
                "propertyValue": "closedwon", "objectId": 5, "occurredAt": 1763300000000}]
    stripe = {"type": "checkout.session.completed", "id": "evt_1", "data": {"object": {
        "id": "cs_1", "payment_status": "paid", "customer_details": {"email": "pat@acme.example", "name": "Acme"},
        "created": 1763300000, "metadata": {f"handoff_{k}": f"v-{k}" for k in (
            "segment", "offer", "terms", "scope", "kickoff_by", "first_milestone")}}}}
    return hubspot_wins(hubspot, pb.deals), stripe_wins(stripe, pb.deals)


def portal_records(pb: Playbook) -> Any:
    """The artifacts the client's submitted questionnaire records."""
    from tasks.portal.intake import questionnaire_of, recorded_on_submit

    return recorded_on_submit(questionnaire_of(pb))


def portal_answers(pb: Playbook) -> Any:
    """The questionnaire's required fields missing from an empty form, and answers refused."""
    from tasks.portal.intake import clean_answer, missing_required, questionnaire_of

    q = questionnaire_of(pb)
    refused = []
    for section in q.sections:
        for item in section.fields:
            for raw in ("x" * 600, "not-an-email", ["Nope"], "Email"):
                try:
                    clean_answer(item, raw)  # type: ignore[arg-type]
                except ValueError as exc:
                    refused.append((item.key, str(raw)[:10], str(exc)))
    return missing_required(q, {}, set()), refused


def team_people(pb: Playbook) -> Any:
    """Whom the inbox treats as the business side (their mail is not a client reply)."""
    from tasks.mail.inbox.match import team_addresses

    return sorted(team_addresses(pb))


def typed_times(pb: Playbook) -> Any:
    """Times a person types: ten minutes ahead, a close 200 days ago, a fact 20 days pre-close."""
    from db.validation import HandoffError
    from tasks.onboarding.records.core import check_after_close, check_close, check_happened

    now = MON + 30 * D
    outcomes = []
    for check in (lambda: check_happened(pb, now + dt.timedelta(minutes=10), now=now),
                  lambda: check_close(pb, now - 200 * D, now=now),
                  lambda: check_after_close(pb, _client().row, MON - 20 * D)):
        try:
            check()
            outcomes.append("accepted")
        except HandoffError as exc:
            outcomes.append(str(exc))
    return outcomes


def link_expiry(pb: Playbook) -> Any:
    """When a handed-off client's portal link stops working."""
    from tasks.portal.links import expires_at

    row = _client().row
    row.status, row.ready_at = "ready", MON + 20 * D
    return expires_at(pb, row, MON)


def stage_forms(pb: Playbook) -> Any:
    """The Prefect UI form of each stage: the ticks it offers, their words and lanes."""
    from unittest.mock import patch

    from tasks.onboarding.steps import stage_form

    with patch("tasks.onboarding.steps.get_playbook", return_value=pb):
        forms = [stage_form.__wrapped__(s.key) for s in pb.stages]
    return [(n, f.title, f.description) for form in forms for n, f in form.model_fields.items()]


def packet_mail(pb: Playbook) -> Any:
    """The packet mail's words around the sections."""
    from tasks.mail.outbox import business_context
    from tasks.mail.render import render_message

    return render_message("handoff_packet", {
        "business": business_context(pb), "packet": {"revision": 1, "sections": []},
        "client": {"name": "Acme", "offer": "Growth retainer", "segment": "smb"}}).text


WEEK = (pd.Timestamp("2026-11-16", tz="UTC"), pd.Timestamp("2026-11-23", tz="UTC"))


def _frames(**frames: pd.DataFrame) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(**frames)


def audit_owners(pb: Playbook) -> Any:
    """Who the weekly audit names for the stage that aged most and the commonest blocker."""
    from tasks.calendar.clock import calendar_for
    from tasks.reporting.questions import _blocker_types, _stage_aging

    start, end = WEEK
    stays = pd.DataFrame({"onboarding_id": [1, 2], "stage": ["intake_completion"] * 2,
                          "left": [start - pd.Timedelta(days=3), start + pd.Timedelta(days=2)],
                          "days": [2.0, 5.0]})
    onboardings = pd.DataFrame({"id": [1], "status": ["ready"], "ready_at": [start],
                                "stage_entered_at": [start], "stage": ["ready_to_deliver"]})
    blockers = pd.DataFrame({"type": ["missing_access"], "onboarding_id": [1],
                             "opened_at": [start + pd.Timedelta(days=1)],
                             "resolved_at": pd.Series([pd.NaT], dtype="datetime64[ns, UTC]")})
    ctx = _frames(frames=_frames(onboardings=onboardings, blockers=blockers), stays=stays,
                  calendar=calendar_for(pb))
    return [_stage_aging(ctx, pb, start, end)["owner"],  # type: ignore[arg-type]
            _blocker_types(ctx, pb, start, end)["owner"]]  # type: ignore[arg-type]


def capacity_lanes(pb: Playbook) -> Any:
    """The lane the 'SLA misses persist' scale trigger points at (the most-missed SLA's lane)."""
    from tasks.calendar.clock import calendar_for
    from tasks.reporting.kpis.triggers import capacity_signals

    start, end = WEEK
    series = pd.DataFrame({"sla_adherence": [0.8, 0.8, 0.8], "handoff_rework_rate": [0.0] * 3,
                           "founder_interruptions_per_week": [0.0] * 3,
                           "start": [start - pd.Timedelta(days=14), start - pd.Timedelta(days=7),
                                     start], "end": [start - pd.Timedelta(days=7), start, end]})
    late = pd.DataFrame({"sla_key": ["welcome"], "status": ["sent"], "sent_at": [start],
                         "late_business_minutes": [30.0]})
    empty_blockers = pd.DataFrame({"type": pd.Series(dtype=str),
                                   "onboarding_id": pd.Series(dtype="int64"),
                                   "opened_at": pd.Series(dtype="datetime64[ns, UTC]"),
                                   "resolved_at": pd.Series(dtype="datetime64[ns, UTC]")})
    onboardings = pd.DataFrame({"id": pd.Series(dtype="int64"), "status": pd.Series(dtype=str),
                                "ready_at": pd.Series(dtype="datetime64[ns, UTC]"),
                                "owner_email": pd.Series(dtype=str)})
    ctx = _frames(frames=_frames(communications=late, blockers=empty_blockers,
                                 onboardings=onboardings), calendar=calendar_for(pb))
    return [(s.key, s.lane) for s in capacity_signals(ctx, pb, series, end)]  # type: ignore[arg-type]


def alert_copies(pb: Playbook) -> Any:
    """A team notice in lane C: the chat copies the playbook's alerts route it to."""
    from tasks.comms.alerts import alert_drafts
    from tasks.mail.outbox import Draft

    notice = Draft(onboarding_id=1, template="threshold_escalation",
                   recipients=["va@northwind.example"], key="esc:x:1:1", context={})
    return [(d.key, tuple(d.recipients)) for d in alert_drafts(pb, [notice])]


# key path -> (edit path, new value, observation); the edit is one value of the shipped file.
Case = tuple[str, Any, Callable[[Playbook], Any]]
CASES: dict[str, Case] = {
    "stages[].on_enter": ("stages.0.on_enter", [], at_close),
    "stages[].on_exit": ("stages.0.on_exit", ["kickoff_recap"], after_close),
    "stages[].sla.within": ("stages.1.sla.within", 2, next_step),
    "stages[].sla.unit": ("stages.1.sla.unit", "clock_hours", next_step),
    "stages[].sla.from": ("stages.1.sla.from", "closed_at", next_step),
    "stages[].name": ("stages.1.name", "Intake", next_step),
    "stages[].artifacts[].label": ("stages.1.artifacts.0.label", "Docs asked for", next_step),
    "stages[].artifacts[].key": ("stages.0.artifacts.0.key", "terms_agreed", exit_rule),
    "stages[].checklists": ("stages.1.checklists", [], exit_rule),
    "stages[].gates": ("stages.3.gates", [], exit_rule),
    "stages[].artifacts[].from_client": ("stages.1.artifacts.1.from_client", False,
                                         client_owes),
    "stages[].artifacts[].client_label": ("stages.1.artifacts.1.client_label",
                                          "Your answers", client_owes),
    "checklists.*[].from_client": ("checklists.before_kickoff.1.from_client", False,
                                   client_owes),
    "checklists.*[].client_label": ("checklists.before_kickoff.1.client_label", "Logos",
                                    client_owes),
    "checklists.*[].key": ("checklists.before_handoff.0.key", "setup_done", exit_rule),
    "checklists.*[].label": ("checklists.before_kickoff.0.label", "Scope written up",
                             next_step),
    "slas.*.within": ("slas.welcome.within", 8, at_close),
    "slas.*.unit": ("slas.welcome.unit", "business_days", at_close),
    "slas.*.from": ("slas.welcome.from", "deal_terms_confirmed", at_close),
    "slas.*.template": ("slas.intake_reminder.template", "setup_progress_update", reminding),
    "slas.*.every_min": ("slas.intake_reminder.every_min", 36, reminding),
    "slas.*.every_max": ("slas.intake_reminder.every_max", 72, reminding),
    "slas.*.until": ("slas.intake_reminder.until", "kickoff_alignment", reminding),
    "slas.*.every": ("slas.setup_progress_update.every", 5, in_setup),
    "slas.*.while": ("slas.setup_progress_update.while", "kickoff_alignment", in_setup),
    "inbox.pause_after_reply.within": ("inbox.pause_after_reply.within", 0.01, replied),
    "inbox.pause_after_reply.unit": ("inbox.pause_after_reply.unit", "clock_hours", replied),
    "escalations.no_response_after_reminder_cycles": (
        "escalations.no_response_after_reminder_cycles", 3, unanswered),
    "escalations.critical_dependency_unresolved.after": (
        "escalations.critical_dependency_unresolved.after", 100, blocked),
    "escalations.critical_dependency_unresolved.unit": (
        "escalations.critical_dependency_unresolved.unit", "business_hours", blocked),
    "escalations.kickoff_beyond_committed_window": (
        "escalations.kickoff_beyond_committed_window", False, kickoff_late),
    "escalations.scope_conflict_affecting_timeline": (
        "escalations.scope_conflict_affecting_timeline", False, scope_blocked),
    "blockers.*.escalation[].after": ("blockers.missing_access.escalation.2.after", 5, blocked),
    "blockers.*.escalation[].to": ("blockers.missing_access.escalation.0.to", "backup",
                                   blocked),
    "blockers.*.escalation[].unit": ("blockers.missing_access.escalation.1.unit",
                                     "business_hours", blocked),
    "blockers.*.template": ("blockers.missing_access.template", "blocker_missing_documents",
                            blocked),
    "blockers.*.label": ("blockers.missing_access.label", "No access yet", blocked),
    "blockers.*.founder_boundary": ("blockers.scope_ambiguity.founder_boundary", None,
                                    scope_blocked),
    "founder_boundaries.*": ("founder_boundaries.scope_exception", "Scope changes",
                             scope_blocked),
    "business.founder.email": ("business.founder.email", "ceo@northwind.example",
                               scope_blocked),
    "business.founder.name": ("business.founder.name", "Fay", at_close),
    "business.name": ("business.name", "Southwind", at_close),
    "business.sender.name": ("business.sender.name", "Southwind team", at_close),
    "calendar.timezone": ("calendar.timezone", "Europe/London", business_clock),
    "calendar.workdays": ("calendar.workdays", ["mon", "tue", "wed", "thu", "fri", "sat"],
                          business_clock),
    "calendar.hours.start": ("calendar.hours.start", "08:00", business_clock),
    "calendar.hours.end": ("calendar.hours.end", "18:00", business_clock),
    "calendar.holidays.country": ("calendar.holidays.country", None, business_clock),
    "calendar.holidays.subdivision": ("calendar.holidays.subdivision", "MA", business_clock),
    "calendar.closed_dates": ("calendar.closed_dates", [], business_clock),
    "kpi_thresholds[].key": ("kpi_thresholds.0.key", "kickoff_slower", thresholds),
    "kpi_thresholds[].metric": ("kpi_thresholds.1.metric", "median_close_to_kickoff_days",
                                thresholds),
    "kpi_thresholds[].action": ("kpi_thresholds.1.action", "Fix the packet", thresholds),
    "kpi_thresholds[].owner_lane": ("kpi_thresholds.1.owner_lane", "B", thresholds),
    "kpi_thresholds[].rule.kind": ("kpi_thresholds.2.rule.kind", "above", thresholds),
    "kpi_thresholds[].rule.pct": ("kpi_thresholds.0.rule.pct", 90, thresholds),
    "kpi_thresholds[].rule.value": ("kpi_thresholds.1.rule.value", 0.2, thresholds),
    "kpi_thresholds[].rule.weeks": ("kpi_thresholds.2.rule.weeks", 3, thresholds),
    "kpi_thresholds[].rule.other_metric": ("kpi_thresholds.3.rule.other_metric",
                                           "handoff_rework_rate", thresholds),
    "kpi_thresholds[].rule.other_at_least": ("kpi_thresholds.3.rule.other_at_least", 0.99,
                                             thresholds),
    "deals.lane": ("deals.lane", "D", won_deal),
    "deals.owners": ("deals.owners", [{"source": "pipedrive", "crm_owner": "42",
                                       "owner": "ops@northwind.example",
                                       "backup": "va@northwind.example"}], won_deal),
    "deals.segment": ("deals.segment", "enterprise", won_deal),
    "deals.offer": ("deals.offer", "Audit", won_deal),
    "deals.terms_from_deal": ("deals.terms_from_deal", True, won_deal),
    "deals.hubspot_won_stage": ("deals.hubspot_won_stage", "12345", crm_payloads),
    "deals.fields.segment": ("deals.fields.segment", "tier", crm_payloads),
    "deals.fields.offer": ("deals.fields.offer", "plan", crm_payloads),
    "deals.fields.terms": ("deals.fields.terms", "contract", crm_payloads),
    "deals.fields.scope": ("deals.fields.scope", "sow", crm_payloads),
    "deals.fields.kickoff_by": ("deals.fields.kickoff_by", "kick", crm_payloads),
    "deals.fields.first_milestone": ("deals.fields.first_milestone", "m1", crm_payloads),
    "alerts": ("alerts", {"C": ["team"]}, alert_copies),
    "stages[].lane": ("stages.1.lane", "D", audit_owners),
    "blockers.*.lane": ("blockers.missing_access.lane", "D", audit_owners),
    "slas.*.lane": ("slas.welcome.lane", "D", capacity_lanes),
    "business.delivery_team.email": ("business.delivery_team.email", "dt@northwind.example",
                                     team_people),
    "business.sender.email": ("business.sender.email", "hello@northwind.example", team_people),
    "business.delivery_team.name": ("business.delivery_team.name", "Studio crew", packet_mail),
    "lanes.*.owner": ("lanes.D.owner", "lead@northwind.example", team_people),
    "lanes.*.backup": ("lanes.D.backup", "lead@northwind.example", team_people),
    "input_limits.future_minutes": ("input_limits.future_minutes", 30, typed_times),
    "input_limits.close_age_days": ("input_limits.close_age_days", 100, typed_times),
    "input_limits.before_close_days": ("input_limits.before_close_days", 10, typed_times),
    "portal.link_expires_after_days": ("portal.link_expires_after_days", 7, link_expiry),
    "stages[].artifacts[].lane": ("stages.0.artifacts.0.lane", "B", stage_forms),
    "stages[].artifacts[].system": ("stages.0.artifacts.0.system", True, stage_forms),
    "checklists.*[].lane": ("checklists.before_kickoff.0.lane", "C", stage_forms),
    "portal.questionnaire.records": ("portal.questionnaire.records", ["required_assets_received"],
                                     portal_records),
    "portal.questionnaire.sections[].records": ("portal.questionnaire.sections.4.records",
                                                ["system_access_verified"], portal_records),
    "portal.questionnaire.sections[].fields[].required": (
        "portal.questionnaire.sections.0.fields.0.required", False, portal_answers),
    "portal.questionnaire.sections[].fields[].key": (
        "portal.questionnaire.sections.0.fields.0.key", "contact_name", portal_answers),
    "portal.questionnaire.sections[].fields[].kind": (
        "portal.questionnaire.sections.0.fields.0.kind", "email", portal_answers),
    "portal.questionnaire.sections[].fields[].choices": (
        "portal.questionnaire.sections.0.fields.2.choices", ["Email", "Nope"], portal_answers),
    "portal.questionnaire.sections[].fields[].max_length": (
        "portal.questionnaire.sections.1.fields.4.max_length", 1000, portal_answers),
}

# -- rules that read the record: one new client per observation, in a migrated SQLite file ----

def _onboard(pb: Playbook, session: Session) -> int:
    with session.begin():
        n = session.scalar(select(func.count()).select_from(Onboarding)) or 0
    return new_onboarding(session, pb, client=f"Acme {n}")


def recorded_version(pb: Playbook, session: Session) -> Any:
    """The playbook version a new onboarding records that it runs under."""
    ob_id = _onboard(pb, session)
    with session.begin():
        return records.get_onboarding(session, ob_id).playbook_version


def packet(pb: Playbook, session: Session) -> Any:
    """The handoff packet's sections, titles and rows for a new client."""
    from tasks.onboarding.packet import packet_sections

    ob_id = _onboard(pb, session)
    with session.begin():
        return [(s["key"], s["title"], [r for r in s["rows"] if not r[1].startswith("Acme")])
                for s in packet_sections(session, pb, ob_id)]


def interruption(pb: Playbook, session: Session) -> Any:
    """Logging a founder interruption about pricing: counted, or refused."""
    from db.validation import HandoffError

    try:
        with session.begin():
            records.log_interruption(session, pb, category="pricing", avoidable=True,
                                     onboarding_id=None, lane=None, note=None, at=MON, by="va")
        return "counted"
    except HandoffError as exc:
        return str(exc)


def portal_status(pb: Playbook, session: Session) -> Any:
    """The client's portal status page: each stage in the client's words."""
    from tasks.portal.view import client_page

    ob_id = _onboard(pb, session)
    with session.begin():
        page = client_page(session, pb, records.get_onboarding(session, ob_id), MON)
    return [(stage["title"], stage["what"]) for stage in page["stages"]]


def portal_form(pb: Playbook, session: Session) -> Any:
    """The portal's questionnaire page: its words, sections and fields."""
    from unittest.mock import patch

    from deployments.web import portal

    ob_id = _onboard(pb, session)
    with patch.object(portal, "get_playbook", return_value=pb):
        page = portal._intake_context(ob_id, None, {})
    page.pop("client")
    return page


RECORD_CASES: dict[str, tuple[str, Any, Callable[[Playbook, Session], Any]]] = {
    "version": ("version", "2027.1", recorded_version),
    "packet_sections[].key": ("packet_sections.0.key", "profile", packet),
    "packet_sections[].title": ("packet_sections.0.title", "Who they are", packet),
    "lanes.*.name": ("lanes.A.name", "Intake", packet),
    "interruption_categories": ("interruption_categories", ["scope", "other"], interruption),
    "portal.stages.*.title": ("portal.stages.kickoff_alignment.title", "Meet us", portal_status),
    "portal.stages.*.what": ("portal.stages.kickoff_alignment.what", "A call.", portal_status),
    "portal.questionnaire.title": ("portal.questionnaire.title", "About you", portal_form),
    "portal.questionnaire.intro": ("portal.questionnaire.intro", "Ten minutes.", portal_form),
    "portal.questionnaire.sections[].key": ("portal.questionnaire.sections.2.key", "aims",
                                            portal_form),
    "portal.questionnaire.sections[].title": ("portal.questionnaire.sections.0.title",
                                              "People", portal_form),
    "portal.questionnaire.sections[].intro": ("portal.questionnaire.sections.0.intro",
                                              "Who is who.", portal_form),
    "portal.questionnaire.sections[].fields[].label": (
        "portal.questionnaire.sections.0.fields.0.label", "Your contact", portal_form),
    "portal.questionnaire.sections[].fields[].help": (
        "portal.questionnaire.sections.0.fields.3.help", "Same person is fine.", portal_form),
    "portal.questionnaire.sections[].fields[].accept": (
        "portal.questionnaire.sections.4.fields.0.accept", ["png"], portal_form),
    "portal.questionnaire.sections[].fields[].max_files": (
        "portal.questionnaire.sections.4.fields.0.max_files", 5, portal_form),
}

# Keys whose test lives elsewhere: node ids of tests that edit the key and see the difference.
RISK_KEYS = "tests/db/test_risks.py::test_each_risk_key_changes_what_opens"
ELSEWHERE = {
    "stages[].key": "tests/unit/test_playbook.py::test_missing_stage_is_named",
    # The risk register's keys: each edited in turn in that test (its docstring lists how).
    **{f"risks.*.{key}": RISK_KEYS for key in (
        "mitigation", "owner_lane", "review_every", "trigger.after", "trigger.blockers",
        "trigger.decisions", "trigger.failures", "trigger.followups", "trigger.rule",
        "trigger.statuses", "trigger.unit")},
    "risks.*.label": "tests/db/test_risk_views.py::"
                     "test_the_packet_and_status_list_open_risks_by_label",
    # How a reminder cadence ends, and the client's own clock.
    "slas.*.max_cycles": "tests/db/test_cadence_month.py::test_the_end_rules_differ",
    "slas.*.at_escalation": "tests/db/test_cadence_month.py::test_the_end_rules_differ",
    **{f"calendar.client_hours.{key}": "tests/unit/test_client_clock.py::"
                                       "test_client_hours_keys_move_the_window"
       for key in ("start", "end", "workdays")},
    "deals.fields.client_tz": "tests/deals/test_events_and_mapping.py::"
                              "test_a_deal_carries_the_clients_timezone",
}


KEY_TESTS: dict[str, str] = {
    **{key: f"test_changing_a_key_changes_the_result[{key}]" for key in CASES},
    **{key: f"test_changing_a_key_changes_what_the_record_shows[{key}]" for key in RECORD_CASES},
    **ELSEWHERE,
}


@pytest.fixture(autouse=True)
def _home(home: Path) -> None:
    """The business calendar caches public holidays under HANDOFF_HOME."""


@pytest.mark.parametrize("key", sorted(CASES))
def test_changing_a_key_changes_the_result(key: str) -> None:
    path, value, observe = CASES[key]
    shipped = Playbook.model_validate(SHIPPED)
    before, after = observe(shipped), observe(edited(path, value))
    assert before != after, f"editing {path} to {value!r} changed nothing in {observe.__name__}"


@pytest.mark.parametrize("key", sorted(RECORD_CASES))
def test_changing_a_key_changes_what_the_record_shows(sqlite_url: str, key: str) -> None:
    path, value, observe = RECORD_CASES[key]
    with session_factory(sqlite_url)() as session:
        before = observe(Playbook.model_validate(SHIPPED), session)
        after = observe(edited(path, value), session)
    assert before != after, f"editing {path} to {value!r} changed nothing in {observe.__name__}"


def test_every_key_in_the_playbook_has_a_test() -> None:
    paths = key_paths(SHIPPED)
    assert "stages[].on_enter" in paths and "calendar.hours.start" in paths
    untested = sorted(paths - set(KEY_TESTS))
    assert not untested, f"playbook keys without a test that edits them: {untested}"
    stale = sorted(set(KEY_TESTS) - paths)
    assert not stale, f"table entries for keys the playbook no longer has: {stale}"
    for key, node in ELSEWHERE.items():
        file, name = node.split("::")
        assert f"def {name}(" in (ROOT / file).read_text(), (key, node)


def test_the_removed_owner_role_is_refused(tmp_path: Path) -> None:
    """owner_role routed nothing (the lane does); a file that still carries it is told so."""
    raw = copy.deepcopy(SHIPPED)
    raw["stages"][2]["owner_role"] = "va"
    target = tmp_path / "p.yaml"
    target.write_text(yaml.safe_dump(raw))
    with pytest.raises(PlaybookError, match=r"stages\.2\.owner_role: Extra inputs"):
        load_playbook(target)


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("stages.0.on_enter", ["welcom"], "stages.close_confirmation.on_enter: unknown template "
                                      "'welcom'"),
    ("stages.2.on_enter", ["welcome"], "template 'welcome' is already sent by "
                                       "stages.close_confirmation.on_enter"),
    ("stages.2.on_enter", ["kickoff_confirmation"], "needs kickoff, which a stage message "
                                                    "cannot give"),
    ("stages.4.on_enter", [], "stages.ready_to_deliver.on_enter: must list handoff_packet"),
    ("stages.4.on_exit", ["handoff_packet"], "handoff_packet is sent on entering a stage"),
    ("stages.1.sla.from", "kickoff_call_held", "Input should be 'stage_entered' or "
                                               "'closed_at'"),
    ("slas.welcome.from", "signed_at", "slas.welcome.from: cannot count from 'signed_at'"),
    ("slas.kickoff_recap.from", "stage_entered:kickoff", "cannot count from "
                                                         "'stage_entered:kickoff'"),
    ("slas.intake_reminder.template", "remind", "slas.intake_reminder.template: unknown "
                                                "template 'remind'"),
    ("slas.setup_progress_update.from", "closed_at", "'from: closed_at' needs 'within'"),
    ("blockers.missing_access.template", "blocker_nope", "unknown template 'blocker_nope'"),
])
def test_a_value_the_code_cannot_honour_is_refused(tmp_path: Path, path: str, value: Any,
                                                   expected: str) -> None:
    with pytest.raises(ValueError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        edited(path, value)


@pytest.mark.parametrize(("path", "expected"), [
    ("slas.kickoff_recap", "slas.kickoff_recap: required"),
    ("escalations.no_response_after_reminder_cycles",
     "escalations.no_response_after_reminder_cycles: Field required"),
    ("calendar.hours.start", "calendar.hours.start: Field required"),
    ("stages.0.sla", "stages.0.sla: Field required"),
    ("packet_sections", "packet_sections: Field required"),
])
def test_a_missing_or_unknown_key_is_refused_naming_it(tmp_path: Path, path: str,
                                                       expected: str) -> None:
    for mode in ("missing", "unknown"):
        raw = copy.deepcopy(SHIPPED)
        node = raw
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if mode == "missing":
            del node[int(last) if isinstance(node, list) else last]
            message = expected
        else:  # a key nobody reads, inside the section named (or next to the value named)
            inside = isinstance(node[last], dict)
            (node[last] if inside else node)["colour"] = "blue"
            where = ".".join(parents + [last] if inside else parents)
            message = f"{where + '.' if where else ''}colour: Extra inputs are not permitted"
        target = tmp_path / f"{mode}.yaml"
        target.write_text(yaml.safe_dump(raw))
        with pytest.raises(PlaybookError) as refused:
            load_playbook(target)
        text = str(refused.value)
        assert message in text and "\n" not in text, text
