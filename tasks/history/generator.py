"""A deterministic, realistic onboarding history for demos, tests and benchmarks.

`generate_history` simulates N onboardings closed over M months through the five stages, with
the rows the service layer and the outbox would have written: artifacts, the event log
(stage_transition with from_stage/to_stage), QA checks, blockers, sent messages with their SLA
key and business minutes late, client replies and follow-ups, founder interruptions, packets,
incidents and a few corrective actions already closed.

Clients are simulated and written in chunks (`CHUNK` at a time, one executemany per table per
chunk), so memory stays flat whatever N is. Each chunk has its own random stream and its own
range of ids, so chunks can be simulated in forked workers while this process writes, and the
history is the same for any number of workers. Ids are allocated up front, so message keys and
blocker escalations are known while simulating. On SQLite the rows go to the driver already in
its storage format (the generic path converts every value through the column types, ~4x
slower); elsewhere through SQLAlchemy Core. The passes that draw across all clients (the rough
patch's extra chasing and incidents, founder interruptions) run last, on a summary of each.

The history tells a story a founder recognises: a rough start, steady improvement, then a
rough patch in the last three complete weeks (slower kickoffs, more rework, more status
chasing, more early incidents) so every KPI threshold in the playbook has something to catch.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import multiprocessing
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Table, func, select, text
from sqlalchemy.orm import Session

from db.models import (
    Artifact,
    Blocker,
    ClientResponse,
    Communication,
    CorrectiveAction,
    Event,
    FounderInterruption,
    Incident,
    Onboarding,
    Packet,
    QaReview,
    UTCDateTime,
)
from db.playbook import STAGE_ORDER, Playbook
from tasks.calendar.business_time import BusinessCalendar
from tasks.calendar.clock import business_minutes_late, calendar_for, due_after
from tasks.comms import keys
from tasks.onboarding import records

SEGMENTS = (("smb", 0.55), ("mid_market", 0.35), ("enterprise", 0.10))
OFFERS = (("Growth retainer", 0.5), ("Launch sprint", 0.3), ("Ops audit", 0.2))
BLOCKER_TYPES = (("missing_documents", 0.25), ("missing_access", 0.2), ("approval_delay", 0.15),
                 ("schedule_conflict", 0.15), ("scope_ambiguity", 0.1),
                 ("internal_dependency_delay", 0.15))
INTERRUPTION_LANES = {"scope": "C", "pricing": "C", "scheduling": "A", "client_escalation": "C",
                      "access": "B", "status_request": "C", "other": "D"}
CLARIFIED_TEMPLATES = (("missing_info_reminder", 0.45), ("intake_request", 0.3),
                       ("setup_progress_update", 0.15), ("kickoff_recap", 0.1))
NAMES_A = ("Acme", "Blue", "Cedar", "Delta", "Ember", "Fox", "Granite", "Harbor", "Iris", "Juniper",
           "Keystone", "Lumen", "Maple", "North", "Orchid", "Pine", "Quartz", "River", "Summit",
           "Tidal", "Umber", "Vale", "Willow", "Yarrow", "Zenith")
NAMES_B = ("Dental", "Studio", "Logistics", "Bakery", "Legal", "Fitness", "Realty", "Clinic",
           "Coffee", "Labs", "Outfitters", "Partners", "Analytics", "Design", "Motors")
FIXES = (
    ("handoff rework 18% > 10%: tighten packet quality gate", "D",
     "Added a packet pre-check to the ready stage; QA now blocks packets without scope "
     "exclusions."),
    ("close → kickoff (median) 7.9 d, up 31% for 2 weeks: review scheduling and intake workflow",
     "A", "Kickoff slots offered in the welcome email; intake split into two short forms."),
    ("repeat follow-up requests rising 2 weeks: improve template clarity and cadence", "C",
     "Rewrote the missing-info reminder with a checklist and a clear date."),
    ("first-30-day incidents rising 2 weeks while checklist completion is 93%: audit "
     "checklist quality, not just completion", "B",
     "Added 'access tested by delivery' to the setup checklist."),
    ("handoff rework 15% > 10%: tighten packet quality gate", "D",
     "Delivery team signs the packet before the client is told we are ready."),
)
SEED_NOTE = "Seeded demo history"  # marks demo rows that belong to no client (`demo --clear`)
SEED_BODY = "Seeded demo history: the rendered body of this message is not stored."


@dataclass
class SeedReport:
    """What the generator wrote."""

    onboardings: int
    active: int
    start: dt.datetime
    end: dt.datetime
    rows: dict[str, int] = field(default_factory=dict)


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([w[0] for w in weighted], weights=[w[1] for w in weighted])[0]


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


TABLES = ("artifacts", "events", "blockers", "comms", "responses", "qa", "incidents", "packets")
CHUNK = 5000  # clients simulated and written per batch: bounds memory, keeps executemany large
BLOCKER_ROOM = 8  # blocker ids reserved per client of a chunk (about one is used)


class _Rows:
    """One client's rows, table by table, in the shape of their tables."""

    def __init__(self, onboarding_id: int, end: dt.datetime) -> None:
        self.id, self.end = onboarding_id, end
        self.rows: dict[str, list[dict[str, Any]]] = {k: [] for k in TABLES}

    def event(self, kind: str, at: dt.datetime, actor: str = "va", **detail: Any) -> None:
        if at <= self.end:
            self.rows["events"].append({"onboarding_id": self.id, "at": at, "actor": actor,
                                        "kind": kind, "detail": detail, "reason": None})

    def respond(self, kind: str, at: dt.datetime, template: str | None) -> None:
        self.rows["responses"].append({"onboarding_id": self.id, "kind": kind,
                                       "template": template, "at": at, "note": None})
        self.event(f"client_{kind}", at, "va", template=template)

    def incident(self, at: dt.datetime, severity: str) -> None:
        self.rows["incidents"].append({"onboarding_id": self.id, "severity": severity,
                                       "note": "seeded incident", "at": at})
        self.event("incident_logged", at, "delivery@northwind.example", severity=severity)


class _Sim(_Rows):
    """One client's simulated lifecycle (times in UTC), clipped at the end of history."""

    def __init__(self, gen: _Generator, index: int, closed: dt.datetime) -> None:
        super().__init__(gen.first_id + index, gen.end)
        self.g, self.closed = gen, closed
        rng = gen.rng
        a, b = rng.choice(NAMES_A), rng.choice(NAMES_B)
        self.name = f"{a} {b} {index + 1}"
        self.slug = f"{a}{b}{index + 1}".lower()
        self.segment = _pick(rng, SEGMENTS)
        self.offer = _pick(rng, OFFERS)
        owners = gen.owners
        self.owner = rng.choices(owners, weights=[0.45, 0.35, 0.2][: len(owners)])[0]
        self.backup = next(o for o in gen.backups if o != self.owner)
        self.stage = STAGE_ORDER[0]
        self.stage_entered = closed
        self.kickoff_at: dt.datetime | None = None
        self.kickoff_by = (closed + dt.timedelta(days=12)).date()
        self.ready_at: dt.datetime | None = None
        self.first_milestone: dt.date | None = None

    # -- helpers --------------------------------------------------------------------------

    def later(self, start: dt.datetime, days: float) -> dt.datetime:
        return self.g.calendar.add_business_time(start, self.g.day * max(days, 0.02))

    def artifact(self, key: str, stage: str, at: dt.datetime) -> None:
        if at <= self.g.end:
            self.rows["artifacts"].append({"onboarding_id": self.id, "key": key, "stage": stage,
                                           "recorded_at": at, "recorded_by": self.owner,
                                           "note": None})
            self.event("artifact_recorded", at, self.owner, key=key, stage=stage)

    def message(self, template: str, key: str, at: dt.datetime, *, due: dt.datetime | None,
                sla: str | None, audience: str = "client", lane: str = "C",
                recipients: str | None = None, cycle: int = 0) -> None:
        """A message the outbox queued and sent at `at` (late minutes as the outbox counts)."""
        if at > self.g.end:
            return
        late = business_minutes_late(self.g.playbook, due, at) if due else None
        created = min(at, due) if due else at
        self.rows["comms"].append({
            "onboarding_id": self.id, "template": template, "lane": lane, "audience": audience,
            "recipients": recipients or f"hello@{self.slug}.example",
            "subject": f"{template.replace('_', ' ').capitalize()}: {self.name}",
            "body_html": f"<p>{SEED_BODY}</p>", "body_text": SEED_BODY, "attachments": [],
            "idempotency_key": key, "status": "sent", "attempts": 1, "next_attempt_at": created,
            "created_at": created, "due_at": due, "sent_at": at,
            "message_id": f"<{key.replace(':', '.')}@seed.example>", "sla_key": sla,
            "late_business_minutes": late, "cycle": cycle})
        self.event("message_queued", created, "handoff", template=template, key=key)
        self.event("message_sent", at, "handoff", template=template, key=key,
                   late_business_minutes=late)

    def send_time(self, due: dt.datetime, bad: float, early_days: float = 0.3) -> dt.datetime:
        """When a message due at `due` went out: usually early, sometimes late."""
        rng = self.g.rng
        if rng.random() < 0.04 + 0.22 * bad:
            return self.later(due, rng.uniform(0.05, 1.2))
        return self.g.calendar.add_business_time(due, -self.g.day * rng.uniform(0.02, early_days))

    def advance(self, at: dt.datetime) -> bool:
        """Leave the current stage at `at`; False when that is after the end of history."""
        if at > self.g.end:
            return False
        leaving = self.stage
        index = STAGE_ORDER.index(leaving)
        if index + 1 == len(STAGE_ORDER):
            self.ready_at = at
            self.event("ready_to_deliver", at, self.owner, from_stage=leaving)
        else:
            self.stage = STAGE_ORDER[index + 1]
            self.stage_entered = at
            self.event("stage_transition", at, self.owner, from_stage=leaving,
                       to_stage=self.stage)
        return True

    def items(self, stage: str, entered: dt.datetime, left: dt.datetime,
              late_keys: frozenset[str] = frozenset()) -> None:
        """Record the stage's items between entering and leaving it."""
        rng = self.g.rng
        for item in self.g.playbook.required_items(stage):
            if item.system:
                continue
            span = max((left - entered).total_seconds(), 60.0)
            low = 0.75 if item.key in late_keys else 0.05
            at = entered + dt.timedelta(seconds=span * rng.uniform(low, 0.97))
            if item.key == "kickoff_call_held" and self.kickoff_at is not None:
                at = self.kickoff_at + dt.timedelta(minutes=50)  # recorded when the call ends
            self.artifact(item.key, stage, at)

    def blockers(self, stage: str, entered: dt.datetime, days: float, bad: float) -> float:
        """Open this stage's blockers; returns business days they add to the stage."""
        rng, extra = self.g.rng, 0.0
        count = _poisson(rng, 0.45 * (1 + bad))
        kinds = [_pick(rng, BLOCKER_TYPES) for _ in range(count)]
        if "missing_access" in kinds and rng.random() < 0.25:
            kinds.append("missing_access")  # recurring access problems come in pairs
        for kind in kinds:
            opened = self.later(entered, rng.uniform(0.1, max(days, 0.3)))
            length = rng.uniform(0.3, 2.5) * (1 + bad) * (1.6 if self.g.in_patch(opened) else 1)
            resolved = self.later(opened, length)
            extra = max(extra, length * 0.6)
            self.blocker(kind, opened, resolved, critical=rng.random() < 0.15,
                         affects=kind == "scope_ambiguity" and rng.random() < 0.3)
        return extra

    def blocker(self, kind: str, opened: dt.datetime, resolved: dt.datetime, *, critical: bool,
                affects: bool) -> None:
        """One blocker with its events, and the founder escalation if it outlived the path."""
        if opened > self.g.end:
            return
        pb, blocker_id = self.g.playbook, self.g.next_blocker_id()
        done = resolved <= self.g.end
        self.rows["blockers"].append({
            "id": blocker_id, "onboarding_id": self.id, "type": kind, "critical": critical,
            "note": None, "owner_email": self.owner, "opened_at": opened,
            "opened_by": self.owner, "resolved_at": resolved if done else None,
            "resolved_by": self.owner if done else None, "affects_timeline": affects})
        self.event("blocker_opened", opened, self.owner, blocker_id=blocker_id, type=kind,
                   critical=critical)
        if done:
            self.event("blocker_resolved", resolved, self.owner, blocker_id=blocker_id,
                       type=kind, note=None)
        path = pb.blockers[kind]
        reach = due_after(pb, opened, path.escalation[-1].after, path.escalation[-1].unit)
        if reach < resolved:
            self.message(path.template, keys.blocker_escalation(blocker_id, len(path.escalation)),
                         reach, due=None, sla=None, audience="team", lane=path.lane,
                         recipients=str(pb.business.founder.email))

    def qa(self, stage: str, at: dt.datetime, passed: bool, reason: str | None) -> None:
        if at <= self.g.end:
            self.rows["qa"].append({"onboarding_id": self.id, "passed": passed,
                                    "reason": reason, "stage": stage,
                                    "by": "ops@northwind.example", "at": at})
            self.event("qa_recorded", at, "ops@northwind.example", passed=passed, reason=reason)

    # -- the lifecycle ----------------------------------------------------------------------

    def run(self) -> None:
        g, rng, pb = self.g, self.g.rng, self.g.playbook
        self.event("onboarding_created", self.closed, "va", client=self.name, stage=self.stage)
        welcome = pb.slas["welcome"]
        due = due_after(pb, self.closed, welcome.within or 4, welcome.unit)
        self.message("welcome", keys.welcome(self.id), self.send_time(due, g.bad(self.closed), 0.4),
                     due=due, sla="welcome")
        # 1. close confirmation
        bad = g.bad(self.closed)
        left = self.later(self.closed, 0.2 + rng.expovariate(2.0) * (1 + bad))
        self.items(STAGE_ORDER[0], self.closed, left)
        if not self.advance(left):
            return
        # 2. intake completion
        entered, bad = self.stage_entered, g.bad(self.stage_entered)
        days = 1.5 + rng.expovariate(0.6) * (1 + bad)
        days += self.blockers("intake_completion", entered, days, bad)
        left = self.later(entered, days)
        self.message("intake_request", keys.intake_request(self.id), entered, due=None, sla=None,
                     lane="A")
        self.reminders(entered, left, bad)
        self.items("intake_completion", entered, left)
        if not self.advance(left):
            return
        # 3. kickoff alignment
        entered, bad = self.stage_entered, g.bad(self.stage_entered)
        sched = pb.slas["kickoff_scheduled"]
        confirm_due = due_after(pb, entered, sched.within or 2, sched.unit)
        scheduled = self.send_time(confirm_due, bad, 1.5)
        self.kickoff_at = self.later(entered, 1.2 + rng.expovariate(0.8) * (1 + bad))
        self.kickoff_at = max(self.kickoff_at, self.later(scheduled, 0.3))
        reschedules = 1 if rng.random() < 0.06 + 0.2 * bad else 0
        if g.in_patch(entered, weeks=3):
            reschedules += rng.choice((1, 1, 2))
        self.schedule(scheduled, confirm_due, None)
        for _ in range(reschedules):
            moved_at = self.later(scheduled, rng.uniform(0.2, 0.8))
            previous = self.kickoff_at
            self.kickoff_at = self.later(previous, rng.uniform(1.5, 3.5))
            self.schedule(moved_at, confirm_due, previous)
            scheduled = moved_at
        if self.kickoff_at > g.end:
            return
        recap = pb.slas["kickoff_recap"]
        recap_due = self.kickoff_at + dt.timedelta(hours=recap.within or 24)
        late_recap = rng.random() < 0.05 + 0.2 * bad
        recap_at = recap_due + dt.timedelta(hours=rng.uniform(1, 20)) if late_recap else \
            self.kickoff_at + dt.timedelta(hours=rng.uniform(1, 20))
        self.message("kickoff_recap", keys.kickoff_recap(self.id), recap_at, due=recap_due,
                     sla="kickoff_recap")
        left = self.later(self.kickoff_at, rng.uniform(0.2, 0.9))
        self.items("kickoff_alignment", entered, left)
        if not self.advance(left):
            return
        # 4. setup execution, with the QA gate
        entered, bad = self.stage_entered, g.bad(self.stage_entered)
        days = 3.5 + rng.expovariate(0.4) * (1 + bad)
        days += self.blockers("setup_execution", entered, days, bad)
        check = self.later(entered, days)
        if rng.random() < 0.02 + 0.08 * bad:
            self.qa("setup_execution", check, False, "setup incomplete: tools not configured "
                                                     "as scoped")
            check = self.later(check, rng.uniform(0.8, 2.5))
        self.qa("setup_execution", check, True, None)
        left = self.later(check, rng.uniform(0.05, 0.3))
        self.progress_updates(entered, left, bad)
        self.items("setup_execution", entered, check)
        if not self.advance(left):
            return
        # 5. ready to deliver: packet, handoff QA, client confirmation
        entered, bad = self.stage_entered, g.bad(self.stage_entered)
        self.packet(1, self.later(entered, 0.05))
        check = self.later(entered, 0.4 + rng.expovariate(2.0))
        fails = rng.random() < 0.03 + 0.12 * bad + (0.08 if g.in_patch(check) else 0)
        late_keys = frozenset(rng.sample([i.key for i in pb.required_items("ready_to_deliver")
                                          if not i.system], rng.choice((1, 2)))) if fails else \
            frozenset()
        if fails:
            self.qa("ready_to_deliver", check, False, "packet incomplete: " + ", ".join(
                sorted(k.replace("_", " ") for k in late_keys)))
            redo = self.later(check, rng.uniform(0.6, 2.0))
            self.packet(2, redo)
            check = self.later(redo, 0.1)
        self.qa("ready_to_deliver", check, True, None)
        left = self.later(check, rng.uniform(0.05, 0.4))
        first_check = min((r["at"] for r in self.rows["qa"] if r["stage"] == "ready_to_deliver"),
                          default=check)
        self.items("ready_to_deliver", entered, left if late_keys else first_check,
                   late_keys=late_keys)
        self.message("handoff_packet", keys.handoff_packet(self.id), self.later(entered, 0.05),
                     due=None, sla=None, audience="team", lane="D",
                     recipients=str(pb.business.delivery_team.email))
        if not self.advance(left):
            return
        self.message("ready_to_deliver", keys.ready_to_deliver(self.id), left, due=None, sla=None,
                     lane="D")
        milestone = self.later(left, rng.uniform(4, 12))
        self.first_milestone = milestone.date()

    def schedule(self, at: dt.datetime, due: dt.datetime, previous: dt.datetime | None) -> None:
        assert self.kickoff_at is not None
        if at > self.g.end:
            return
        kind = "kickoff_rescheduled" if previous else "kickoff_scheduled"
        self.event(kind, at, self.owner, kickoff_at=self.kickoff_at.isoformat(),
                   previous=previous.isoformat() if previous else None)
        self.message("kickoff_confirmation", keys.kickoff_confirmation(self.id, self.kickoff_at),
                     at,
                     due=due, sla="kickoff_scheduled", lane="A")

    def reminders(self, entered: dt.datetime, left: dt.datetime, bad: float) -> None:
        rng = self.g.rng
        last, cycle = entered, 0
        while True:
            gap = rng.uniform(26, 46) if rng.random() > 0.05 + 0.2 * bad else rng.uniform(49, 60)
            at = last + dt.timedelta(hours=gap)
            if at >= left:
                return
            cycle += 1
            self.message("missing_info_reminder", keys.missing_info_reminder(self.id, cycle), at,
                         due=last + dt.timedelta(hours=48), sla="intake_reminder", lane="A",
                         cycle=cycle)
            last = at

    def progress_updates(self, entered: dt.datetime, left: dt.datetime, bad: float) -> None:
        every = self.g.playbook.slas["setup_progress_update"].every or 3
        last, cycle = entered, 0
        while True:
            due = self.later(last, every)
            if due >= left:
                return
            cycle += 1
            at = self.send_time(due, bad, 0.2)
            self.message("setup_progress_update", keys.setup_progress_update(self.id, cycle), at,
                         due=due, sla="setup_progress_update", cycle=cycle)
            last = at

    def packet(self, revision: int, at: dt.datetime) -> None:
        if at <= self.g.end:
            self.rows["packets"].append({"onboarding_id": self.id, "revision": revision,
                                         "created_at": at,
                                         "markdown": f"# Handoff packet: {self.name}\n\n"
                                                     f"Revision {revision} (seeded history).\n"})
            if revision == 1:
                self.artifact("handoff_packet_delivered", "ready_to_deliver", at)

    def client_voice(self) -> None:
        """Client replies, clarification requests and status follow-ups during onboarding."""
        rng = self.g.rng
        span = (min(self.ready_at or self.end, self.end) - self.closed).total_seconds()
        if span <= 0:
            return
        bad = self.g.bad(self.closed)
        for kind, lam in (("response", 1.5), ("clarification", 0.25 * (1 + 2 * bad)),
                          ("followup_request", 0.35 * (1 + 2 * bad))):
            for _ in range(_poisson(rng, lam)):
                at = self.closed + dt.timedelta(seconds=rng.uniform(0.05, 1) * span)
                template = _pick(rng, CLARIFIED_TEMPLATES) if kind == "clarification" else None
                self.respond(kind, at, template)

    def after_handoff(self) -> None:
        """Delivery incidents in the first 30 days after handoff."""
        rng, g = self.g.rng, self.g
        if self.ready_at is None:
            return
        for _ in range(_poisson(rng, 0.25 * (0.5 + g.bad(self.ready_at)))):
            at = self.ready_at + dt.timedelta(days=rng.uniform(1, 29))
            if at <= g.end and not g.in_patch(at):
                self.incident(at, rng.choice(("minor", "minor", "minor", "major")))

    def onboarding_row(self) -> dict[str, Any]:
        """The onboardings row as the service layer leaves it at the end of history."""
        playbook = self.g.playbook
        status = "ready" if self.ready_at else "active"
        open_blockers = [b for b in self.rows["blockers"] if b["resolved_at"] is None]
        next_action: str | None = None
        next_due: dt.datetime | None = None
        if status == "active":
            next_action, next_due = records.next_action(
                playbook, self.stage, {a["key"] for a in self.rows["artifacts"]},
                self.stage_entered)
        milestone = self.first_milestone or (self.closed + dt.timedelta(days=35)).astimezone(
            playbook.calendar.tz).date()
        return {
            "id": self.id, "client_name": self.name, "segment": self.segment,
            "offer": self.offer, "owner_email": self.owner, "backup_email": self.backup,
            "contact_emails": f"hello@{self.slug}.example", "stage": self.stage,
            "stage_entered_at": self.stage_entered, "status": status,
            "next_action": next_action, "next_action_due": next_due,
            "blocker_tag": open_blockers[0]["type"] if open_blockers and status == "active"
            else None,
            "closed_at": self.closed, "kickoff_at": self.kickoff_at,
            "kickoff_by": self.kickoff_by, "first_milestone": milestone,
            "ready_at": self.ready_at, "playbook_version": playbook.version,
            "flow_run_id": None, "created_at": self.closed, "row_version": 1}


class _Generator:
    def __init__(self, playbook: Playbook, *, n: int, months: int, end: dt.datetime,
                 seed: int, first_id: int, first_blocker_id: int) -> None:
        self.playbook, self.n, self.end, self.seed = playbook, n, end, seed
        self.first_id, self.first_blocker_id = first_id, first_blocker_id
        self._blocker_id, self._blocker_limit = first_blocker_id - 1, 0
        self.rng = random.Random(seed)
        self.calendar: BusinessCalendar = calendar_for(playbook)
        self.day = self.calendar.business_day_length
        self.start = end - dt.timedelta(days=round(months * 30.44))
        lanes = playbook.lanes
        people = list(dict.fromkeys([str(lanes[k].owner) for k in lanes]
                                    + [str(lanes[k].backup) for k in lanes]))
        founder = str(playbook.business.founder.email)
        staff = [p for p in people if p != founder]
        self.owners = staff[:3]
        self.backups = staff[:3] + [p for p in staff[3:]]
        tz = playbook.calendar.tz
        local = end.astimezone(tz)
        monday = dt.datetime.combine(local.date() - dt.timedelta(days=local.weekday()),
                                     dt.time(), tzinfo=tz)
        self.patch_end = monday.astimezone(dt.UTC)
        self.patch_start = self.patch_end - dt.timedelta(days=21)
        self.closed = self.closings()

    def for_chunk(self, index: int) -> _Generator:
        """This generator for one chunk: its own random stream and its own range of blocker
        ids (so chunks can be simulated apart; the ranges leave gaps between chunks)."""
        chunk = copy.copy(self)
        chunk.rng = random.Random(self.seed * 1_000_003 + index + 1)
        chunk._blocker_id = self.first_blocker_id + index * CHUNK * BLOCKER_ROOM - 1
        chunk._blocker_limit = chunk._blocker_id + CHUNK * BLOCKER_ROOM
        return chunk

    def next_blocker_id(self) -> int:
        self._blocker_id += 1
        if self._blocker_id > self._blocker_limit:
            raise RuntimeError("more blockers in one chunk than BLOCKER_ROOM allows")
        return self._blocker_id

    def in_patch(self, at: dt.datetime, weeks: int = 3) -> bool:
        return self.patch_end - dt.timedelta(days=7 * weeks) <= at < self.patch_end + \
            dt.timedelta(days=7)

    def bad(self, at: dt.datetime) -> float:
        """How rough operations were at `at`: rough start, improvement, a late rough patch."""
        if self.in_patch(at):
            return 0.6
        p = (at - self.start) / (self.end - self.start)
        return max(0.05, 0.8 * (1 - p / 0.55)) if p < 0.55 else 0.05 + 0.1 * (p - 0.55)

    def closings(self) -> list[dt.datetime]:
        span = (self.end - dt.timedelta(days=1) - self.start).total_seconds()
        # A growing business: more deals close in recent months than at the start.
        raw = sorted(self.start + dt.timedelta(seconds=span * self.rng.random() ** 0.8)
                     for _ in range(self.n))
        return [self.calendar.next_open(t) for t in raw]


def generate_history(session: Session, playbook: Playbook, *, n: int = 300, months: int = 6,
                     end: dt.datetime, seed: int = 7, processes: int = 1) -> SeedReport:
    """Write a deterministic history of `n` onboardings over `months` months ending at `end`.

    `processes` > 1 simulates chunks in that many forked workers while this process writes;
    each chunk has its own random stream, so the history is the same whatever the count.
    """
    if end.tzinfo is None:
        raise ValueError(f"end {end.isoformat()} must be timezone-aware")
    sink = _Sink(session)
    gen = _Generator(playbook, n=n, months=months, end=end.astimezone(dt.UTC), seed=seed,
                     first_id=sink.next_id(Onboarding), first_blocker_id=sink.next_id(Blocker))
    past: list[_Past] = []
    for chunk in _simulated_chunks(gen, sink.sqlite, processes):
        for prepared in chunk.tables:
            sink.insert(prepared)
        past.extend(chunk.past)
    for prepared in _prepare_batch(_rough_patch(gen, past), sink.sqlite):
        sink.insert(prepared)
    sink.insert(_prepare(FounderInterruption, _interruptions(gen, past), sink.sqlite))
    actions = _closed_actions(gen)
    known = set(session.scalars(select(CorrectiveAction.source_key).where(
        CorrectiveAction.source_key.in_([a["source_key"] for a in actions]))))
    sink.insert(_prepare(CorrectiveAction, [a for a in actions if a["source_key"] not in known],
                         sink.sqlite))
    sink.finish()
    return SeedReport(onboardings=n, active=sum(1 for p in past if p.ready_at is None),
                      start=gen.start, end=gen.end, rows=sink.counts)


@dataclass(frozen=True)
class _Past:
    """What the cross-client passes need of a client already written."""

    id: int
    closed: dt.datetime
    ready_at: dt.datetime | None


MODELS: dict[str, type[Any]] = {
    "blockers": Blocker, "artifacts": Artifact, "events": Event, "comms": Communication,
    "responses": ClientResponse, "qa": QaReview, "incidents": Incident, "packets": Packet}


@dataclass
class _Prepared:
    """Rows for one table, ready for the driver (tuples on SQLite, dicts for Core)."""

    model: type[Any]
    columns: list[str]
    values: list[Any]


@dataclass
class _Chunk:
    past: list[_Past]
    tables: list[_Prepared]


def _simulate_chunk(gen: _Generator, index: int, sqlite: bool) -> _Chunk:
    """Clients [index * CHUNK, (index + 1) * CHUNK): simulated, their rows prepared."""
    gen = gen.for_chunk(index)
    sims = []
    for position in range(index * CHUNK, min((index + 1) * CHUNK, gen.n)):
        sim = _Sim(gen, position, gen.closed[position])
        sim.run()
        sim.client_voice()
        sim.after_handoff()
        sims.append(sim)
    return _Chunk(past=[_Past(s.id, s.closed, s.ready_at) for s in sims],
                  tables=_prepare_batch(sims, sqlite))


_FORKED: _Generator | None = None  # the generator a forked worker inherits


def _simulate_forked(index: int, sqlite: bool) -> _Chunk:
    assert _FORKED is not None
    return _simulate_chunk(_FORKED, index, sqlite)


def _simulated_chunks(gen: _Generator, sqlite: bool, processes: int) -> Iterator[_Chunk]:
    """Chunks in order; with processes > 1, simulated ahead by forked workers."""
    count = -(-gen.n // CHUNK)
    if processes <= 1 or count <= 1:
        for index in range(count):
            yield _simulate_chunk(gen, index, sqlite)
        return
    global _FORKED
    _FORKED = gen
    try:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            ahead: deque[AsyncResult[_Chunk]] = deque()
            for index in range(count):
                ahead.append(pool.apply_async(_simulate_forked, (index, sqlite)))
                if len(ahead) > processes:  # bounded: finished chunks wait in memory
                    yield ahead.popleft().get()
            while ahead:
                yield ahead.popleft().get()
    finally:
        _FORKED = None


def _prepare_batch(batch: Sequence[_Rows], sqlite: bool) -> list[_Prepared]:
    """One insert per table for a batch of clients (onboardings first, for the keys)."""
    out = [_prepare(Onboarding, [r.onboarding_row() for r in batch if isinstance(r, _Sim)],
                    sqlite)]
    for name, model in MODELS.items():
        rows = [row for r in batch for row in r.rows[name]]
        if name == "events":
            rows.sort(key=lambda row: row["at"])  # each client's log reads in time order
        out.append(_prepare(model, rows, sqlite))
    return out


def _rough_patch(gen: _Generator, past: list[_Past]) -> list[_Rows]:
    """The last three complete weeks: status chasing and early incidents rise week on week."""
    rng, out = gen.rng, []
    for week, (asking, incidents) in enumerate(((3, 2), (6, 4), (10, 7))):
        start = gen.patch_start + dt.timedelta(days=7 * week)
        end = start + dt.timedelta(days=7)
        live = [p for p in past if p.closed < start and (p.ready_at is None or p.ready_at > end)]
        for client in rng.sample(live, min(asking, len(live))):
            rows = _Rows(client.id, gen.end)
            for _ in range(2):
                rows.respond("followup_request", start + dt.timedelta(hours=rng.uniform(10, 160)),
                             None)
            out.append(rows)
        handed = [p for p in past if p.ready_at and p.ready_at < start
                  and p.ready_at + dt.timedelta(days=30) > end]
        for client in rng.sample(handed, min(incidents, len(handed))):
            rows = _Rows(client.id, gen.end)
            rows.incident(start + dt.timedelta(hours=rng.uniform(10, 160)),
                          rng.choice(("minor", "major")))
            out.append(rows)
    return out


def _interruptions(gen: _Generator, past: list[_Past]) -> list[dict[str, Any]]:
    """Founder interruptions: many and avoidable early, fewer later, rising in the patch."""
    rng, rows = gen.rng, []
    categories = gen.playbook.interruption_categories
    closed = [p.closed for p in past]  # sorted: closings are generated in order
    day = gen.start
    while day < gen.end:
        bad = gen.bad(day)
        for _ in range(_poisson(rng, 0.4 + 1.6 * bad)):
            at = gen.calendar.next_open(day + dt.timedelta(hours=rng.uniform(0, 24)))
            if at > gen.end:
                continue
            category = rng.choice(categories)
            client = _live_client(rng, past, bisect_right(closed, at), at) \
                if rng.random() < 0.8 else None
            rows.append({"onboarding_id": client, "category": category,
                         "avoidable": rng.random() < 0.3 + 0.4 * bad,
                         "lane": INTERRUPTION_LANES.get(category, "D"), "at": at,
                         "note": None if client else SEED_NOTE})
        day += dt.timedelta(days=1)
    return rows


def _live_client(rng: random.Random, past: list[_Past], closed_by_then: int,
                 at: dt.datetime) -> int | None:
    """A client (of the first `closed_by_then`) still onboarding at `at`, drawn at random."""
    if not closed_by_then:
        return None
    for _ in range(64):  # rejection sampling: most draws hit, and it stays O(1) per call
        client = past[rng.randrange(closed_by_then)]
        if client.ready_at is None or client.ready_at > at:
            return client.id
    live = [p.id for p in past[:closed_by_then] if p.ready_at is None or p.ready_at > at]
    return rng.choice(live) if live else None


def _sqlite_datetime(value: dt.datetime | None) -> str | None:
    """UTCDateTime on SQLite: naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    if value is None:
        return None
    if value.tzinfo is not dt.UTC:
        value = value.astimezone(dt.UTC)
    return value.isoformat(" ", "microseconds")[:26]  # drop the '+00:00'


def _sqlite_value(column_type: Any) -> Callable[[Any], Any] | None:
    """How SQLAlchemy would store a value of this type on SQLite (None: as it is)."""
    if isinstance(column_type, UTCDateTime):
        return _sqlite_datetime
    if isinstance(column_type, Date):
        return lambda v: None if v is None else v.isoformat()
    if isinstance(column_type, JSON):
        return lambda v: None if v is None else json.dumps(v)
    if isinstance(column_type, Boolean):
        return lambda v: None if v is None else int(v)
    return None


def _prepare(model: type[Any], rows: list[dict[str, Any]], sqlite: bool) -> _Prepared:
    """SQLite: tuples already in its storage format; elsewhere the dicts, for Core."""
    columns = list(rows[0]) if rows else []
    if not (sqlite and rows):
        return _Prepared(model, columns, rows)
    table: Table = model.__table__
    get = itemgetter(*columns)
    convert = [(i, f) for i, c in enumerate(columns)
               if (f := _sqlite_value(table.c[c].type)) is not None]
    values = []
    for row in rows:
        value = list(get(row))
        for i, f in convert:
            value[i] = f(value[i])
        values.append(tuple(value))
    return _Prepared(model, columns, values)


class _Sink:
    """Bulk inserts with explicit ids: to the SQLite driver in its storage format, else Core."""

    def __init__(self, session: Session) -> None:
        self.conn = session.connection()
        self.sqlite = self.conn.dialect.name == "sqlite"
        self.counts: dict[str, int] = {}

    def next_id(self, model: type[Any]) -> int:
        return int(self.conn.scalar(select(func.coalesce(func.max(model.id), 0))) or 0) + 1

    def insert(self, prepared: _Prepared) -> None:
        if not prepared.values:
            return
        table: Table = prepared.model.__table__
        if self.sqlite:
            self.conn.exec_driver_sql(
                f"INSERT INTO {table.name} ({', '.join(prepared.columns)}) "
                f"VALUES ({', '.join('?' * len(prepared.columns))})", prepared.values)
        else:
            self.conn.execute(table.insert(), prepared.values)
        self.counts[table.name] = self.counts.get(table.name, 0) + len(prepared.values)

    def finish(self) -> None:
        """Explicit ids leave PostgreSQL's sequences behind: move them past what was written."""
        if self.conn.dialect.name != "postgresql":
            return
        for table in ("onboardings", "blockers"):
            self.conn.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"))


def _closed_actions(gen: _Generator) -> list[dict[str, Any]]:
    """Fixes shipped earlier: corrective actions from past reviews, closed with a note."""
    rows = []
    lanes = gen.playbook.lanes
    at = gen.start + dt.timedelta(days=24)
    index = 0
    while at < gen.patch_start - dt.timedelta(days=14):
        title, lane, note = FIXES[index % len(FIXES)]
        week = at.astimezone(gen.playbook.calendar.tz).strftime("%G-W%V")
        closed = at + dt.timedelta(days=gen.rng.uniform(6, 16))
        rows.append({"source_key": f"history:{index}:{week}", "title": title,
                     "owner_email": str(lanes[lane].owner), "lane": lane,
                     "due": gen.calendar.add_business_days(at, 5).date(), "created_at": at,
                     "closed_at": closed, "close_note": note})
        index += 1
        at += dt.timedelta(days=gen.rng.uniform(24, 36))
    return rows
