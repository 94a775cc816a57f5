"""A Prefect server that answers /health but never its API: every CLI command that talks to
Prefect gives up after its short timeout, records the fact, and says so in one line; no
traceback, no seven-minute hang."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from uuid import uuid4

import pytest
from sqlalchemy import select, update

from db.models import Artifact, Onboarding
from db.session import session_factory
from tests.cli.test_cli import run
from tests.factories import new_onboarding


class _HealthyButHung(BaseHTTPRequestHandler):
    """200 to /health; every other request is read and never answered."""

    release: threading.Event

    def _answer(self) -> None:
        if self.path.rstrip("/").endswith("/health"):
            body = b"true"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.release.wait(300)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Quiet."""


@pytest.fixture
def hung_prefect() -> Iterator[str]:
    release = threading.Event()
    handler = type("Handler", (_HealthyButHung,), {"release": release})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    release.set()
    server.shutdown()
    server.server_close()


def no_traceback(result: object) -> None:
    stderr = getattr(result, "stderr", "")
    assert "Traceback" not in stderr and "httpx" not in stderr, stderr


def test_a_hung_prefect_api_costs_seconds_and_the_fact_is_kept(
        sqlite_url: str, hung_prefect: str, playbook: object) -> None:
    factory = session_factory(sqlite_url)
    with factory() as session:
        ob_id = new_onboarding(session, playbook)  # type: ignore[arg-type]
    with factory() as session, session.begin():
        session.execute(update(Onboarding).where(Onboarding.id == ob_id)
                        .values(flow_run_id=str(uuid4())))
    env = {"PREFECT_API_URL": hung_prefect, "HANDOFF_PREFECT_TIMEOUT": "2"}

    added = run(sqlite_url, "artifact", "add", str(ob_id), "deal_terms_confirmed", env=env)
    no_traceback(added)
    assert "did not answer within 2 s" in added.stdout
    with factory() as session:
        assert "deal_terms_confirmed" in session.scalars(select(Artifact.key).where(
            Artifact.onboarding_id == ob_id)).all()

    onboarded = run(sqlite_url, "onboard", "--client", "Hung Prefect Co", "--segment", "smb",
                    "--offer", "Growth", "--owner", "va@northwind.example", "--backup",
                    "va2@northwind.example", "--contact", "pat@hung.example", "--json", env=env)
    no_traceback(onboarded)
    assert "did not answer" in json.loads(onboarded.stdout)["flow"]

    reconciled = run(sqlite_url, "reconcile", env=env, ok=False)
    no_traceback(reconciled)
    assert reconciled.returncode == 1
    lines = [line for line in reconciled.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "did not answer" in lines[0], reconciled.stderr


class _CountsButNeverCreates(_HealthyButHung):
    """Answers /health, a CSRF token and the in-flight count (nothing running); never answers
    a run start."""

    def _answer(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        answers = {"/flow_runs/count": b"0", "/csrf-token":
                   b'{"token": "t", "client": "c", "expiration": "2099-01-01T00:00:00Z"}'}
        body = next((a for suffix, a in answers.items() if path.endswith(suffix)), None)
        if body is not None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super()._answer()

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer


def test_a_queued_start_the_server_does_not_answer_stays_queued(
        sqlite_url: str, playbook: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy server that takes too long to create a run must not cost the client its start:
    the row stays in run_starts and the next pass asks again (same idempotency key)."""
    from db.settings import get_settings
    from tasks.prefect.pacing import queued_ids, start_queued, start_run

    release = threading.Event()
    handler = type("Handler", (_CountsButNeverCreates,), {"release": release})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{server.server_address[1]}/api")
        monkeypatch.setenv("HANDOFF_PREFECT_TIMEOUT", "1")
        get_settings.cache_clear()
        with session_factory(sqlite_url)() as session:
            ob_id = new_onboarding(session, playbook)  # type: ignore[arg-type]
        said = start_run(ob_id)
        assert "did not answer within 1 s" in said, said
        assert queued_ids() == {ob_id}
        again = start_queued()
        assert again.started == {} and again.unanswered and again.waiting == 1
        assert queued_ids() == {ob_id}
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        get_settings.cache_clear()
