"""The passes drawn across all clients, run once every client is written: the rough patch's extra
status chasing and incidents, founder interruptions, and the fixes shipped in past reviews."""

from __future__ import annotations

import datetime as dt
import random
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from tasks.history.rows import SEED_NOTE, Rows
from tasks.history.story import Story, poisson

INTERRUPTION_LANES = {"scope": "C", "pricing": "C", "scheduling": "A", "client_escalation": "C",
                      "access": "B", "status_request": "C", "other": "D"}

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


@dataclass(frozen=True)
class Past:
    """What the cross-client passes need of a client already written."""

    id: int
    closed: dt.datetime
    ready_at: dt.datetime | None


def rough_patch(gen: Story, past: list[Past]) -> list[Rows]:
    """The last three complete weeks: status chasing and early incidents rise week on week."""
    rng, out = gen.rng, []
    for week, (asking, incidents) in enumerate(((3, 2), (6, 4), (10, 7))):
        start = gen.patch_start + dt.timedelta(days=7 * week)
        end = start + dt.timedelta(days=7)
        live = [p for p in past if p.closed < start and (p.ready_at is None or p.ready_at > end)]
        for client in rng.sample(live, min(asking, len(live))):
            rows = Rows(client.id, gen.end)
            for _ in range(2):
                rows.respond("followup_request", start + dt.timedelta(hours=rng.uniform(10, 160)),
                             None)
            out.append(rows)
        handed = [p for p in past if p.ready_at and p.ready_at < start
                  and p.ready_at + dt.timedelta(days=30) > end]
        for client in rng.sample(handed, min(incidents, len(handed))):
            rows = Rows(client.id, gen.end)
            rows.incident(start + dt.timedelta(hours=rng.uniform(10, 160)),
                          rng.choice(("minor", "major")))
            out.append(rows)
    return out


def interruptions(gen: Story, past: list[Past]) -> list[dict[str, Any]]:
    """Founder interruptions: many and avoidable early, fewer later, rising in the patch."""
    rng, rows = gen.rng, []
    categories = gen.playbook.interruption_categories
    closed = [p.closed for p in past]  # sorted: closings are generated in order
    day = gen.start
    while day < gen.end:
        bad = gen.bad(day)
        for _ in range(poisson(rng, 0.4 + 1.6 * bad)):
            at = gen.calendar.next_open(day + dt.timedelta(hours=rng.uniform(0, 24)))
            if at > gen.end:
                continue
            category = rng.choice(categories)
            client = live_client(rng, past, bisect_right(closed, at), at) \
                if rng.random() < 0.8 else None
            rows.append({"onboarding_id": client, "category": category,
                         "avoidable": rng.random() < 0.3 + 0.4 * bad,
                         "lane": INTERRUPTION_LANES.get(category, "D"), "at": at,
                         "note": None if client else SEED_NOTE})
        day += dt.timedelta(days=1)
    return rows


def live_client(rng: random.Random, past: list[Past], closed_by_then: int,
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


def closed_actions(gen: Story) -> list[dict[str, Any]]:
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
