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

import datetime as dt
import multiprocessing
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import (
    Blocker,
    CorrectiveAction,
    FounderInterruption,
    Onboarding,
)
from db.playbook import Playbook
from tasks.history.crowd import Past, closed_actions, interruptions, rough_patch
from tasks.history.lifecycle import Client
from tasks.history.storage import Prepared, Sink, prepare, prepare_batch
from tasks.history.story import Story

CHUNK = 5000  # clients simulated and written per batch: bounds memory, keeps executemany large


@dataclass
class SeedReport:
    """What the generator wrote."""

    onboardings: int
    active: int
    start: dt.datetime
    end: dt.datetime
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class Chunk:
    """One chunk's clients, simulated: what the later passes need of each, and their rows."""

    past: list[Past]
    tables: list[Prepared]


def _simulate_chunk(gen: Story, index: int, sqlite: bool) -> Chunk:
    """Clients [index * CHUNK, (index + 1) * CHUNK): simulated, their rows prepared."""
    gen = gen.for_chunk(index, CHUNK)
    sims = []
    for position in range(index * CHUNK, min((index + 1) * CHUNK, gen.n)):
        sim = Client(gen, position, gen.closed[position])
        sim.run()
        sim.client_voice()
        sim.after_handoff()
        sims.append(sim)
    return Chunk(past=[Past(s.id, s.closed, s.ready_at) for s in sims],
                 tables=prepare_batch(sims, [s.onboarding_row() for s in sims], sqlite))


_FORKED: Story | None = None  # the generator a forked worker inherits


def _simulate_forked(index: int, sqlite: bool) -> Chunk:
    assert _FORKED is not None
    return _simulate_chunk(_FORKED, index, sqlite)


def _simulated_chunks(gen: Story, sqlite: bool, processes: int) -> Iterator[Chunk]:
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
            ahead: deque[AsyncResult[Chunk]] = deque()
            for index in range(count):
                ahead.append(pool.apply_async(_simulate_forked, (index, sqlite)))
                if len(ahead) > processes:  # bounded: finished chunks wait in memory
                    yield ahead.popleft().get()
            while ahead:
                yield ahead.popleft().get()
    finally:
        _FORKED = None


def generate_history(session: Session, playbook: Playbook, *, n: int = 300, months: int = 6,
                     end: dt.datetime, seed: int = 7, processes: int = 1) -> SeedReport:
    """Write a deterministic history of `n` onboardings over `months` months ending at `end`.

    `processes` > 1 simulates chunks in that many forked workers while this process writes;
    each chunk has its own random stream, so the history is the same whatever the count.
    """
    if end.tzinfo is None:
        raise ValueError(f"end {end.isoformat()} must be timezone-aware")
    sink = Sink(session)
    gen = Story(playbook, n=n, months=months, end=end.astimezone(dt.UTC), seed=seed,
                first_id=sink.next_id(Onboarding), first_blocker_id=sink.next_id(Blocker))
    past: list[Past] = []
    for chunk in _simulated_chunks(gen, sink.sqlite, processes):
        for prepared in chunk.tables:
            sink.insert(prepared)
        past.extend(chunk.past)
    for prepared in prepare_batch(rough_patch(gen, past), [], sink.sqlite):
        sink.insert(prepared)
    sink.insert(prepare(FounderInterruption, interruptions(gen, past), sink.sqlite))
    actions = closed_actions(gen)
    known = set(session.scalars(select(CorrectiveAction.source_key).where(
        CorrectiveAction.source_key.in_([a["source_key"] for a in actions]))))
    sink.insert(prepare(CorrectiveAction, [a for a in actions if a["source_key"] not in known],
                        sink.sqlite))
    sink.finish()
    return SeedReport(onboardings=n, active=sum(1 for p in past if p.ready_at is None),
                      start=gen.start, end=gen.end, rows=sink.counts)
