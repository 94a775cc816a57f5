"""One client's onboarding through the five stages, simulated: what it saw, when, and how late."""

from __future__ import annotations

import datetime as dt
from typing import Any

from db.playbook import STAGE_ORDER
from tasks.calendar.clock import due_after
from tasks.comms import keys
from tasks.history.rows import ClientRows
from tasks.history.story import pick, poisson
from tasks.onboarding import records

CLARIFIED_TEMPLATES = (("missing_info_reminder", 0.45), ("intake_request", 0.3),
                       ("setup_progress_update", 0.15), ("kickoff_recap", 0.1))


class Client(ClientRows):
    """One client's simulated lifecycle, from the deal closing to ready to deliver."""

    def run(self) -> None:
        """The five stages in order, each ending when it is left, until the end of history."""
        g, pb = self.g, self.g.playbook
        self.event("onboarding_created", self.closed, "va", client=self.name, stage=self.stage)
        welcome = pb.slas["welcome"]
        due = due_after(pb, self.closed, welcome.within or 4, welcome.unit)
        self.message("welcome", keys.stage_message("welcome", self.id),
                     self.send_time(due, g.bad(self.closed), 0.4), due=due, sla="welcome")
        left: dt.datetime | None = None
        for stage in (self.close_confirmation, self.intake_completion, self.kickoff_alignment,
                      self.setup_execution, self.ready_to_deliver):
            left = stage()
            if left is None or not self.advance(left):
                return
        assert left is not None
        self.message("ready_to_deliver", keys.stage_message("ready_to_deliver", self.id), left,
                     due=None, sla=None, lane="D")
        milestone = self.later(left, self.g.rng.uniform(4, 12))
        self.first_milestone = milestone.date()

    def close_confirmation(self) -> dt.datetime:
        """Stage 1: the close confirmed; returns when the client leaves the stage."""
        bad = self.g.bad(self.closed)
        left = self.later(self.closed, 0.2 + self.g.rng.expovariate(2.0) * (1 + bad))
        self.items(STAGE_ORDER[0], self.closed, left)
        return left

    def intake_completion(self) -> dt.datetime:
        """Stage 2: the intake request, its reminders and blockers."""
        g, rng = self.g, self.g.rng
        entered, bad = self.stage_entered, g.bad(self.stage_entered)
        days = 1.5 + rng.expovariate(0.6) * (1 + bad)
        days += self.blockers("intake_completion", entered, days, bad)
        left = self.later(entered, days)
        self.message("intake_request", keys.stage_message("intake_request", self.id), entered,
                     due=None, sla=None, lane="A")
        self.reminders(entered, left, bad)
        self.items("intake_completion", entered, left)
        return left

    def kickoff_alignment(self) -> dt.datetime | None:
        """Stage 3: the kickoff scheduled (and maybe moved), held and recapped; None when it
        falls after the end of history."""
        g, rng, pb = self.g, self.g.rng, self.g.playbook
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
            return None
        recap = pb.slas["kickoff_recap"]
        recap_due = self.kickoff_at + dt.timedelta(hours=recap.within or 24)
        late_recap = rng.random() < 0.05 + 0.2 * bad
        recap_at = recap_due + dt.timedelta(hours=rng.uniform(1, 20)) if late_recap else \
            self.kickoff_at + dt.timedelta(hours=rng.uniform(1, 20))
        self.message("kickoff_recap", keys.kickoff_recap(self.id), recap_at, due=recap_due,
                     sla="kickoff_recap")
        left = self.later(self.kickoff_at, rng.uniform(0.2, 0.9))
        self.items("kickoff_alignment", entered, left)
        return left

    def setup_execution(self) -> dt.datetime:
        """Stage 4: setup with its blockers, progress updates and the QA gate."""
        g, rng = self.g, self.g.rng
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
        return left

    def ready_to_deliver(self) -> dt.datetime:
        """Stage 5: the packet, handoff QA (a failed check means a second revision), and the
        packet mailed to the delivery team."""
        g, rng, pb = self.g, self.g.rng, self.g.playbook
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
        self.message("handoff_packet", keys.stage_message("handoff_packet", self.id),
                     self.later(entered, 0.05), due=None, sla=None, audience="team", lane="D",
                     recipients=str(pb.business.delivery_team.email))
        return left

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
            for _ in range(poisson(rng, lam)):
                at = self.closed + dt.timedelta(seconds=rng.uniform(0.05, 1) * span)
                template = pick(rng, CLARIFIED_TEMPLATES) if kind == "clarification" else None
                self.respond(kind, at, template)

    def after_handoff(self) -> None:
        """Delivery incidents in the first 30 days after handoff."""
        rng, g = self.g.rng, self.g
        if self.ready_at is None:
            return
        for _ in range(poisson(rng, 0.25 * (0.5 + g.bad(self.ready_at)))):
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
                self.stage_entered, self.closed)
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
            "stage_items": [i.key for i in playbook.required_items(self.stage)],
            "stage_playbook_version": playbook.version, "flow_run_id": None,
            "created_at": self.closed, "row_version": 1}
