"""The scale-out path, on real components: a Prefect server on PostgreSQL, the app database on
PostgreSQL, a `process` work pool with two workers (deployments/workers.py), 50 onboardings at once.

Every artifact, the kickoff and a passing QA are recorded before the runs start, so each run walks
all five stages in one execution: the test is about many runs on many workers at once (no message
sent twice, no stage skipped), not about waiting, which the other flow tests cover.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from deployments.server import start_server, stop, wait_healthy
from deployments.workers import start_worker
from tests.conftest import IN_CI, PG_ADMIN_URL, _pg_reachable, pg_database_pair
from tests.flow.conftest import TEST_SERVICES_OFF, free_port, handoff_env
from tests.smtp_server import LoopbackSmtp

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 50
POOL = "handoff-ci"
STAGES = ["close_confirmation", "intake_completion", "kickoff_alignment", "setup_execution",
          "ready_to_deliver"]


@dataclass
class Cluster:
    api_url: str
    db_url: str
    smtp: LoopbackSmtp
    workers: list[subprocess.Popen[bytes]]
    home: Path


@pytest.fixture
def pg_databases() -> Iterator[tuple[str, str]]:
    """A fresh Prefect database and a fresh app database on PostgreSQL, dropped afterwards."""
    if not _pg_reachable():
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is unreachable and CI=true: must not skip")
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
    with pg_database_pair("scale") as urls:
        yield urls


@pytest.fixture
def cluster(pg_databases: tuple[str, str], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """Prefect server (PostgreSQL) + app database (PostgreSQL) + work pool + two workers."""
    prefect_db, app_db = pg_databases
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = start_server(tmp_path / "prefect", port=port, log=tmp_path / "server.log",
                          services_off=TEST_SERVICES_OFF,
                          extra_env={"PREFECT_SERVER_UI_ENABLED": "false",
                                     "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_db})
    workers: list[subprocess.Popen[bytes]] = []
    with LoopbackSmtp() as smtp:
        home = tmp_path / "handoff"
        home.mkdir()
        # Scale-out starts as many client runs at once as the pool takes (paced starts).
        env = handoff_env(home, smtp_port=smtp.port, api_url=api, HANDOFF_DATABASE_URL=app_db,
                          HANDOFF_RUN_STARTS_IN_FLIGHT=str(CLIENTS),
                          PREFECT_HOME=str(tmp_path / "prefect"),
                          PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "prefect-results"))
        for key, value in env.items():
            if key.startswith(("HANDOFF_", "PREFECT_")):
                monkeypatch.setenv(key, value)
        from db.settings import get_settings

        get_settings.cache_clear()
        try:
            wait_healthy(api, timeout=120, process=server)
            subprocess.run([sys.executable, "-m", "deployments.cli", "db", "upgrade"],
                           cwd=ROOT, check=True, capture_output=True)
            setup = subprocess.run([sys.executable, "-m", "deployments.workers", "setup",
                                    "--pool", POOL, "--pool-limit", "6",
                                    "--onboarding-limit", str(CLIENTS)],
                                   cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert setup.returncode == 0, setup.stderr[-3000:]
            for number in (1, 2):
                workers.append(start_worker(POOL, name=f"worker-{number}", limit=3,
                                            log=tmp_path / f"worker-{number}.log"))
            yield Cluster(api_url=api, db_url=app_db, smtp=smtp, workers=workers,
                          home=tmp_path)
        finally:
            for worker in workers:
                stop(worker)
            stop(server)
            get_settings.cache_clear()


def _record_everything(onboarding_ids: list[int]) -> None:
    """Every artifact of every stage, the kickoff and a passing QA, through the service layer."""
    from db.playbook import get_playbook
    from db.session import session_factory
    from tasks.onboarding import records

    playbook = get_playbook()
    now = dt.datetime.now(dt.UTC)
    keys = [item.key for stage in STAGES for item in playbook.required_items(stage)
            if not item.system]
    with session_factory()() as session, session.begin():
        for ob_id in onboarding_ids:
            records.schedule_kickoff(session, playbook, ob_id, kickoff_at=now, by="va", at=now)
            for key in keys:
                records.record_artifact(session, playbook, ob_id, key, by="va", at=now)
            records.record_qa(session, ob_id, passed=True, reason=None, by="qa", at=now)


def _new_onboardings(n: int) -> list[int]:
    from db.playbook import get_playbook
    from db.session import session_factory
    from tasks.onboarding import records

    playbook = get_playbook()
    with session_factory()() as session, session.begin():
        return [records.create_onboarding(session, playbook, records.NewOnboarding.parse(
            client=f"Scale Client {i:02d}", segment="smb", offer="Growth",
            owner="va@northwind.example", backup="va2@northwind.example",
            contacts=[f"pat@scale{i:02d}.example"], closed_at=dt.datetime.now(dt.UTC),
            kickoff_by=None, first_milestone=None), actor="va").id for i in range(n)]


def _completed(api: str) -> int:
    response = httpx.post(f"{api}/flow_runs/count", timeout=30, json={
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        "deployments": {"name": {"any_": ["client-onboarding"]}}})
    response.raise_for_status()
    return int(response.json())


def _worker_submissions(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if "submitting flow run" in line)


@pytest.mark.flow
@pytest.mark.postgres
def test_fifty_onboardings_on_two_workers(cluster: Cluster) -> None:
    from tasks.prefect.pacing import start_run

    began = time.monotonic()
    ids = _new_onboardings(CLIENTS)
    _record_everything(ids)
    for ob_id in ids:
        assert "/runs/flow-run/" in start_run(ob_id)

    deadline = time.monotonic() + 900
    while _completed(cluster.api_url) < CLIENTS:
        assert all(w.poll() is None for w in cluster.workers), "a worker died"
        assert time.monotonic() < deadline, (
            f"only {_completed(cluster.api_url)} of {CLIENTS} runs completed; worker log:\n"
            + (cluster.home / "worker-1.log").read_text()[-3000:])
        time.sleep(2)
    runtime = time.monotonic() - began

    engine = create_engine(cluster.db_url)
    try:
        with engine.connect() as conn:
            statuses = Counter(conn.execute(text("SELECT status FROM onboardings")).scalars())
            moves = conn.execute(text(
                "SELECT onboarding_id, kind, detail FROM events WHERE kind IN "
                "('stage_transition', 'ready_to_deliver') ORDER BY id")).all()
            outbox = conn.execute(text(
                "SELECT idempotency_key, status, message_id FROM communications")).all()
    finally:
        engine.dispose()
    assert statuses == {"ready": CLIENTS}

    # No stage skipped: four transitions in the playbook's order, then ready, for every client.
    walked: dict[int, list[tuple[str, str | None, str | None]]] = {i: [] for i in ids}
    for ob_id, kind, detail in moves:
        detail = detail if isinstance(detail, dict) else json.loads(detail)
        walked[ob_id].append((kind, detail.get("from_stage"), detail.get("to_stage")))
    expected = [("stage_transition", a, b) for a, b in zip(STAGES, STAGES[1:], strict=False)]
    expected.append(("ready_to_deliver", "ready_to_deliver", None))
    for ob_id in ids:
        assert walked[ob_id] == expected, (ob_id, walked[ob_id])

    # No message sent twice: unique keys, all sent, and each arrived exactly once.
    keys = [key for key, _status, _mid in outbox]  # unique by constraint: the mail is the test
    assert {status for _key, status, _mid in outbox} == {"sent"}
    received = Counter(str(m.message["Message-ID"]) for m in cluster.smtp.messages)
    assert max(received.values()) == 1, received.most_common(3)
    assert set(received) == {mid for _key, _status, mid in outbox}
    per_client = Counter(key.split(":")[0] for key in keys)
    assert per_client["welcome"] == CLIENTS and per_client["ready_to_deliver"] == CLIENTS
    assert per_client["handoff_packet"] == CLIENTS

    # Both workers took part: this is scale-out, not one worker doing everything.
    shares = [_worker_submissions(cluster.home / f"worker-{n}.log") for n in (1, 2)]
    assert all(shares), shares
    print(f"\n{CLIENTS} onboardings on 2 workers: {runtime:.0f}s from first record to "
          f"last completion; worker shares {shares}")
