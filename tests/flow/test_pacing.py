"""A burst of starts is paced on the real server and runner: `handoff reconcile` with many clients
and no runs queues them in run_starts, never more than run_starts_in_flight client runs are
Scheduled, Pending or Running at once, and the start-queued-runs flow starts the rest as earlier
ones reach Suspended: every client gets exactly one run, and the queue ends empty."""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import pytest
from sqlalchemy import create_engine, text

from db.settings import Settings
from tests.flow.conftest import Stack

CLIENTS = 10
IN_FLIGHT = ("SCHEDULED", "PENDING", "RUNNING")


def _client_runs(stack: Stack, ids: list[int]) -> list[dict[str, object]]:
    """This test's client runs (the session's server holds other tests' runs too, and a
    plain listing is capped and unordered)."""
    response = httpx.post(f"{stack.api_url}/flow_runs/filter", timeout=30, json={
        "flows": {"name": {"any_": ["client-onboarding"]}},
        "flow_runs": {"tags": {"any_": [f"onboarding:{i}" for i in ids]}}, "limit": 200})
    response.raise_for_status()
    return list(response.json())


def _new_clients(stack: Stack) -> list[int]:
    ids = []
    for n in range(CLIENTS):
        out = stack.cli("onboard", "--client", f"Burst Studio {n}", "--segment", "smb",
                        "--offer", "Growth", "--owner", "va@northwind.example",
                        "--backup", "va2@northwind.example", "--contact", f"pat@burst{n}.example",
                        "--terms", "signed", "--scope", "SEO", "--no-flow", "--json")
        ids.append(int(json.loads(out.stdout)["id"]))
    return ids


@pytest.mark.timeout(1500)  # ten runs a few at a time: ~2 min here when quiet, more when not
def test_a_burst_of_starts_is_paced_and_every_client_gets_one_run(stack: Stack) -> None:
    limit = Settings().run_starts_in_flight
    assert CLIENTS >= 2 * limit, "the burst must be bigger than the limit to prove the pacing"
    ids = _new_clients(stack)
    out = stack.cli("reconcile", "--json")
    assert set(ids) <= set(json.loads(out.stdout)["started"])
    engine = create_engine(stack.db_url)
    peak, queued_seen = 0, 0
    deadline = time.monotonic() + 120 + CLIENTS * 30
    try:
        while True:
            runs = _client_runs(stack, ids)
            states = Counter(r["state"]["type"] for r in runs)  # type: ignore[index]
            peak = max(peak, sum(states[t] for t in IN_FLIGHT))
            with engine.connect() as conn:
                queued = conn.execute(text("SELECT count(*) FROM run_starts")).scalar_one()
            queued_seen = max(queued_seen, queued)
            suspended = sum(1 for r in runs if r["state"]["name"] == "Suspended")  # type: ignore[index]
            if suspended == CLIENTS and not queued:
                break
            assert time.monotonic() < deadline, f"not all suspended: {states}, {queued} queued"
            time.sleep(0.5)
        with engine.connect() as conn:
            linked = conn.execute(text(
                "SELECT count(*) FROM onboardings WHERE flow_run_id IS NOT NULL "
                f"AND id IN ({','.join(map(str, ids))})")).scalar_one()
    finally:
        engine.dispose()
    assert peak <= limit, f"{peak} client runs in flight at once; the limit is {limit}"
    assert queued_seen >= CLIENTS - limit, "the burst was never queued: the pacing did nothing"
    per_client = Counter(t for r in runs for t in r["tags"]  # type: ignore[attr-defined]
                         if str(t).startswith("onboarding:"))
    assert sorted(per_client.values()) == [1] * CLIENTS  # one run each, never two
    assert linked == CLIENTS
