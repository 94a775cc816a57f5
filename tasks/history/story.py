"""The story the demo history tells: a rough start, steady improvement, then a rough patch in the
last three complete weeks (slower kickoffs, more rework, more status chasing, more early
incidents), so every KPI threshold in the playbook has something to catch."""

from __future__ import annotations

import copy
import datetime as dt
import math
import random

from db.playbook import Playbook
from tasks.calendar.business_time import BusinessCalendar
from tasks.calendar.clock import calendar_for

BLOCKER_ROOM = 8  # blocker ids reserved per client of a chunk (about one is used)


def pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    """One of the values, drawn with their weights."""
    return rng.choices([w[0] for w in weighted], weights=[w[1] for w in weighted])[0]


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw with mean `lam` (Knuth: exact, and cheap for the small means used here)."""
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


class Story:
    """The business's story: when deals close, how rough operations were at each moment, and
    the ids of the clients and blockers it writes."""

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

    def for_chunk(self, index: int, size: int) -> Story:
        """This generator for one chunk: its own random stream and its own range of blocker
        ids (so chunks can be simulated apart; the ranges leave gaps between chunks)."""
        chunk = copy.copy(self)
        chunk.rng = random.Random(self.seed * 1_000_003 + index + 1)
        chunk._blocker_id = self.first_blocker_id + index * size * BLOCKER_ROOM - 1
        chunk._blocker_limit = chunk._blocker_id + size * BLOCKER_ROOM
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
