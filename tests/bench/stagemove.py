"""The stage move (part of `--only waiting`): from `handoff artifact add` returning to the
stage-transition row, for one client at a time and with three VAs recording at once, broken
down with the run's own state timestamps (Suspended → Resuming: the wake-up; Resuming → Pending:
the runner's poll; Pending → Running: a fresh engine process; Running → the transition row: the
flow body replayed up to the move); beside the floor of each on Prefect 3.9: the same runner
poll and process start for an empty flow (on a runner like handoff's: the same poll, its runs at
the same lower priority), and the imports alone in a fresh process."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
import uuid
from typing import Any

from prefect import flow

from tests.bench.common import HANDOFF, PY, ROOT, median, p95
from tests.bench.stack import wait_for

CLOSE_KEYS = ["deal_terms_confirmed", "scope_and_timeline_captured", "onboarding_owner_assigned"]
PHASES = ("wake", "poll", "start", "body")
EMPTY = "empty-flow/empty"
MISSED_AFTER = 60.0  # seconds without the stage move before reconcile is asked to wake the run


@flow(name="empty-flow")
def empty_flow() -> None:
    """The floor of a run: nothing to import, nothing to do."""


def move(env: dict[str, str], onboarding_id: int) -> dict[str, Any]:
    """Record the stage's items through the CLI; when it returned and when the stage moved."""
    from sqlalchemy import select

    from db.models import Event
    from db.session import session_factory

    factory = session_factory()
    called = dt.datetime.now(dt.UTC)
    said = subprocess.run([str(HANDOFF), "artifact", "add", str(onboarding_id), *CLOSE_KEYS],
                          env=env, check=True, capture_output=True, text=True, timeout=120)
    returned = dt.datetime.now(dt.UTC)
    moved: list[dt.datetime] = []

    def transition() -> bool:
        with factory() as session:
            at = session.scalar(select(Event.at).where(Event.onboarding_id == onboarding_id,
                                                       Event.kind == "stage_transition"))
        if at is not None:
            moved.append(at)
        return at is not None

    missed = None
    try:
        wait_for(f"onboarding {onboarding_id} to leave close confirmation", transition,
                 timeout=MISSED_AFTER)
    except TimeoutError:
        # The wake-up did not reach the run (best effort by design): reconcile must wake it.
        missed = said.stdout.strip().splitlines()[-1:] or [""]
        missed.append(f"states since the call: {_states_since(factory, onboarding_id, called)}")
        for _ in range(3):  # another VA's reconcile may be waking the same runs: ask again
            woke = subprocess.run([str(HANDOFF), "reconcile"], env=env, capture_output=True,
                                  text=True, timeout=300)
            if woke.returncode == 0:
                break
            missed.append(f"reconcile exit {woke.returncode}: "
                          + (woke.stderr or woke.stdout).strip()[-300:])
            time.sleep(5)
        wait_for(f"onboarding {onboarding_id} to leave close confirmation after reconcile",
                 transition, timeout=180)
    return {"onboarding": onboarding_id, "called": called, "returned": returned,
            "moved": moved[0], "missed": missed}


def moves_by(env: dict[str, str], ids: list[int], vas: int) -> list[dict[str, Any]]:
    """`vas` VAs at once, each taking the next client when its last one has moved."""
    done: list[dict[str, Any]] = []
    queue = list(ids)
    lock = threading.Lock()

    def va() -> None:
        while True:
            with lock:
                if not queue:
                    return
                onboarding_id = queue.pop(0)
            result = move(env, onboarding_id)
            with lock:
                done.append(result)

    workers = [threading.Thread(target=va) for _ in range(vas)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return done


def _states_since(factory: Any, onboarding_id: int, after: dt.datetime) -> str:
    """The run's states from `after` on, each with its seconds since then (why a wake-up
    missed)."""
    from prefect import get_client
    from sqlalchemy import select

    from db.models import Onboarding

    with factory() as session:
        run_id = session.scalar(select(Onboarding.flow_run_id)
                                .where(Onboarding.id == onboarding_id))
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(uuid.UUID(str(run_id)))
    return ", ".join(f"{state.name} +{(state.timestamp - after).total_seconds():.1f}s"
                     for state in sorted(states, key=lambda s: s.timestamp)
                     if state.timestamp >= after - dt.timedelta(seconds=30))


def _state_times(flow_run_id: str, after: dt.datetime) -> dict[str, dt.datetime]:
    """The first time the run entered each state at or after `after`, by state name."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(uuid.UUID(flow_run_id))
    first: dict[str, dt.datetime] = {}
    for state in sorted(states, key=lambda s: s.timestamp):
        if state.timestamp >= after and state.name not in first:
            first[state.name] = state.timestamp
    return first


def broken_down(moves: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Seconds of each phase of each move, from the run's state history."""
    from sqlalchemy import select

    from db.models import Onboarding
    from db.session import session_factory

    with session_factory()() as session:
        runs = dict(session.execute(select(Onboarding.id, Onboarding.flow_run_id).where(
            Onboarding.id.in_([m["onboarding"] for m in moves]))).tuples().all())
    phases = []
    for m in moves:
        if m["missed"] is not None:
            continue  # woken by reconcile: counted apart
        seen = _state_times(str(runs[m["onboarding"]]), m["called"])
        resuming, pending, running = (seen.get(n) for n in ("Resuming", "Pending", "Running"))
        if not (resuming and pending and running):
            continue
        phases.append({
            "cli": (m["returned"] - m["called"]).total_seconds(),
            "after_cli": (m["moved"] - m["returned"]).total_seconds(),
            "wake": (resuming - m["called"]).total_seconds(),
            "poll": (pending - resuming).total_seconds(),
            "start": (running - pending).total_seconds(),
            "body": (m["moved"] - running).total_seconds()})
    return phases


def summary(moves: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and p95 of each phase; wake-ups the run missed (reconcile woke it) apart."""
    phases = broken_down(moves)
    keys = ("cli", "after_cli", *PHASES)
    return {"n": len(phases), "missed": [m["missed"] for m in moves if m["missed"] is not None],
            "median": {k: median([p[k] for p in phases]) for k in keys},
            "p95": {k: p95([p[k] for p in phases]) for k in keys}}


def empty_runs(n: int) -> dict[str, Any]:
    """Run the empty flow n times, one at a time, on its runner: poll and process start."""
    from prefect.deployments import run_deployment

    phases = []
    for _ in range(n):
        created = dt.datetime.now(dt.UTC)
        run = run_deployment(EMPTY, timeout=120, as_subflow=False)
        seen = _state_times(str(run.id), created - dt.timedelta(seconds=1))  # type: ignore[union-attr]
        if {"Scheduled", "Pending", "Running", "Completed"} <= set(seen):
            phases.append({"poll": (seen["Pending"] - seen["Scheduled"]).total_seconds(),
                           "start": (seen["Running"] - seen["Pending"]).total_seconds(),
                           "body": (seen["Completed"] - seen["Running"]).total_seconds()})
    return {"n": len(phases),
            "median": {k: median([p[k] for p in phases]) for k in ("poll", "start", "body")}}


def import_floors(repeats: int = 3) -> dict[str, float]:
    """Wall seconds of a fresh interpreter importing Prefect's engine, and the flow module."""
    took: dict[str, list[float]] = {"python": [], "prefect.engine": [], "flows.onboarding": []}
    for _ in range(repeats):
        for what in took:
            code = "pass" if what == "python" else f"import {what}"
            started = time.perf_counter()
            subprocess.run([PY, "-c", code], cwd=ROOT, check=True, capture_output=True)
            took[what].append(time.perf_counter() - started)
    return {what: median(values) for what, values in took.items()}


def table(w: dict[str, Any]) -> list[str]:
    """The stage move's lines for the waiting part's table (when it measured them)."""
    if "stage_move" not in w:
        return []
    s = w["stage_move"]
    one, many, empty, imports = s["one"], s["vas"], s["empty"], s["imports"]

    def cells(row: dict[str, float]) -> str:
        return " | ".join(f"{row[k]:.1f}" for k in ("cli", "after_cli", *PHASES))

    return ["", "Stage move (seconds; *after CLI* is from the command returning to the "
            "stage-transition row, the target; *wake* is from the call to the run Resuming):", "",
            "| clients | CLI wall | after CLI | wake | runner poll | engine start | flow body |",
            "|---|---|---|---|---|---|---|",
            f"| one at a time, median of {one['n']} | {cells(one['median'])} |",
            f"| {many['n']} clients, 3 VAs at once, median | {cells(many['median'])} |",
            f"| same, p95 | {cells(many['p95'])} |",
            f"| floor: empty flow on a runner (median of {empty['n']}) | | | | "
            f"{empty['median']['poll']:.1f} | {empty['median']['start']:.1f} | "
            f"{empty['median']['body']:.1f} |", "",
            f"A fresh interpreter: {imports['python']:.2f} s; importing `prefect.engine` "
            f"{imports['prefect.engine']:.2f} s, `flows.onboarding` "
            f"{imports['flows.onboarding']:.2f} s (wall, median of 3)."
            + "".join(f" {len(x['missed'])} wake-up(s) did not reach the run ({label}; "
                      f"the CLI said: {x['missed'][0]!r}); `handoff reconcile` woke them."
                      for label, x in (("one at a time", one), ("3 VAs", many)) if x["missed"])]
