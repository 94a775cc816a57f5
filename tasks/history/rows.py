"""The rows a simulated client leaves, each in the shape of its table, as the service layer and the
outbox would have written them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from db.playbook import STAGE_ORDER
from tasks.calendar.clock import business_minutes_late, due_after
from tasks.comms import keys
from tasks.history.story import Story, pick, poisson

SEGMENTS = (("smb", 0.55), ("mid_market", 0.35), ("enterprise", 0.10))

OFFERS = (("Growth retainer", 0.5), ("Launch sprint", 0.3), ("Ops audit", 0.2))

BLOCKER_TYPES = (("missing_documents", 0.25), ("missing_access", 0.2), ("approval_delay", 0.15),
                 ("schedule_conflict", 0.15), ("scope_ambiguity", 0.1),
                 ("internal_dependency_delay", 0.15))

NAMES_A = ("Acme", "Blue", "Cedar", "Delta", "Ember", "Fox", "Granite", "Harbor", "Iris", "Juniper",
           "Keystone", "Lumen", "Maple", "North", "Orchid", "Pine", "Quartz", "River", "Summit",
           "Tidal", "Umber", "Vale", "Willow", "Yarrow", "Zenith")

NAMES_B = ("Dental", "Studio", "Logistics", "Bakery", "Legal", "Fitness", "Realty", "Clinic",
           "Coffee", "Labs", "Outfitters", "Partners", "Analytics", "Design", "Motors")
SEED_NOTE = "Seeded demo history"  # marks demo rows that belong to no client (`demo --clear`)
SEED_BODY = "Seeded demo history: the rendered body of this message is not stored."

TABLES = ("artifacts", "events", "blockers", "comms", "responses", "qa", "incidents", "packets")


class Rows:
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


class ClientRows(Rows):
    """One simulated client: who it is, and how each kind of fact it leaves is written (times in
    UTC, clipped at the end of history)."""

    def __init__(self, gen: Story, index: int, closed: dt.datetime) -> None:
        super().__init__(gen.first_id + index, gen.end)
        self.g, self.closed = gen, closed
        rng = gen.rng
        a, b = rng.choice(NAMES_A), rng.choice(NAMES_B)
        self.name = f"{a} {b} {index + 1}"
        self.slug = f"{a}{b}{index + 1}".lower()
        self.segment = pick(rng, SEGMENTS)
        self.offer = pick(rng, OFFERS)
        owners = gen.owners
        self.owner = rng.choices(owners, weights=[0.45, 0.35, 0.2][: len(owners)])[0]
        self.backup = next(o for o in gen.backups if o != self.owner)
        self.stage = STAGE_ORDER[0]
        self.stage_entered = closed
        self.kickoff_at: dt.datetime | None = None
        self.kickoff_by = (closed + dt.timedelta(days=12)).date()
        self.ready_at: dt.datetime | None = None
        self.first_milestone: dt.date | None = None

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
        count = poisson(rng, 0.45 * (1 + bad))
        kinds = [pick(rng, BLOCKER_TYPES) for _ in range(count)]
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
