"""The CLI's wake-up (tasks/prefect/wake.py) against a loopback stand-in for Prefect's API: a busy
server's 503 is tried again, so the run is woken now instead of by the next reconcile pass; a
resume the server applied before answering 503 is not applied twice; other errors are not
retried."""

from __future__ import annotations

import json
import threading
import urllib.error
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tasks.prefect import runs, wake

RUN = uuid.uuid4()


class FakePrefect:
    """A suspended run; `answers` is what each resume call gets (a status code, then the default:
    Prefect's own answer: ACCEPT when the run is suspended, ABORT once it is resuming)."""

    def __init__(self, answers: list[int], applied_before_503: bool = False) -> None:
        self.answers = answers
        self.applied_before_503 = applied_before_503
        self.state = {"id": "s1", "type": "PAUSED", "name": "Suspended"}
        self.calls: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.calls.append(("GET", self.path))
                self._json(200, {"id": str(RUN), "state": outer.state})

            def do_POST(self) -> None:  # noqa: N802
                outer.calls.append(("POST", self.path))
                self.rfile.read(int(self.headers.get("content-length") or 0))
                resuming = outer.state["type"] != "PAUSED"
                if outer.answers:
                    code = outer.answers.pop(0)
                    if outer.applied_before_503 and not resuming:
                        outer.state = {"id": "s2", "type": "SCHEDULED", "name": "Resuming"}
                    self._json(code, {"exception_message": "Service Unavailable"})
                    return
                if resuming:
                    self._json(200, {"status": "ABORT", "details": {"reason": "not paused"}})
                    return
                outer.state = {"id": "s2", "type": "SCHEDULED", "name": "Resuming"}
                self._json(201, {"status": "ACCEPT"})

            def _json(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def resumes(self) -> int:
        return sum(1 for method, path in self.calls if method == "POST" and "resume" in path)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prefect(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakePrefect]]:
    """The fakes a test serves (stopped after it); the retries' pauses shortened."""
    started: list[FakePrefect] = []
    monkeypatch.setattr(runs, "BUSY_RETRIES_S", (0.01, 0.01, 0.01, 0.01))
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    yield started
    for fake in started:
        fake.stop()


def serve(prefect: list[FakePrefect], monkeypatch: pytest.MonkeyPatch,
          fake: FakePrefect) -> FakePrefect:
    prefect.append(fake)
    monkeypatch.setenv("PREFECT_API_URL", fake.url)
    return fake


def test_a_busy_answer_is_tried_again_and_the_run_is_woken(
        prefect: list[FakePrefect], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = serve(prefect, monkeypatch, FakePrefect(answers=[503, 503]))
    said = wake.wake(RUN)
    assert said.startswith("resumed ") and str(RUN) in said
    assert fake.resumes() == 3 and fake.state["name"] == "Resuming"


def test_a_resume_applied_before_the_503_is_not_applied_again(
        prefect: list[FakePrefect], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = serve(prefect, monkeypatch, FakePrefect(answers=[503], applied_before_503=True))
    assert wake.wake(RUN) == "the run was already resuming; it will re-check the record"
    assert fake.resumes() == 2 and fake.state == {"id": "s2", "type": "SCHEDULED",
                                                  "name": "Resuming"}


def test_a_server_busy_for_longer_leaves_the_run_to_reconcile(
        prefect: list[FakePrefect], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = serve(prefect, monkeypatch, FakePrefect(answers=[503] * 5))
    with pytest.raises(urllib.error.HTTPError) as raised:
        wake.wake(RUN)
    assert raised.value.code == 503
    assert fake.resumes() == 1 + len(runs.BUSY_RETRIES_S) and fake.state["type"] == "PAUSED"


def test_an_error_that_is_not_busy_is_not_tried_again(
        prefect: list[FakePrefect], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = serve(prefect, monkeypatch, FakePrefect(answers=[500]))
    with pytest.raises(urllib.error.HTTPError) as raised:
        wake.wake(RUN)
    assert raised.value.code == 500 and fake.resumes() == 1


class _Answered(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.response = type("Response", (), {"status_code": status})()


@pytest.mark.parametrize(("failures", "calls", "succeeds"), [
    ([503, 502, 504], 4, True),  # busy three times, then answered
    ([503] * 5, 5, False),  # busy every time: the last busy answer is raised
    ([404], 1, False),  # an answer that is no busy one: raised at once
    ([TimeoutError()], 1, False),  # no answer in time: never tried again
])
def test_a_busy_answer_is_tried_again_and_nothing_else_is(
        monkeypatch: pytest.MonkeyPatch, failures: list[object], calls: int,
        succeeds: bool) -> None:
    """The start path (`create_run`, `runs_in_flight`) and the wake-up share this rule."""
    monkeypatch.setattr(runs, "BUSY_RETRIES_S", (0.0, 0.0, 0.0, 0.0))
    made: list[int] = []

    def call() -> str:
        made.append(1)
        if len(made) <= len(failures):
            failure = failures[len(made) - 1]
            raise failure if isinstance(failure, BaseException) else _Answered(int(failure))
        return "answered"

    if succeeds:
        assert runs.when_busy_again(call) == "answered"
    else:
        with pytest.raises((_Answered, TimeoutError)):
            runs.when_busy_again(call)
    assert len(made) == calls
