"""The CLI's door to Prefect: start a client's run, and wake it when a fact is recorded.

Both are best effort by design: the database is the record of truth, so when the Prefect server
is down, or answers /health but not its API, the fact is kept and the reconcile flow catches the
run up later. Every call has short connect and read timeouts (`HANDOFF_PREFECT_TIMEOUT`, 5 s)
and a call that timed out is not tried again, so a hung server costs the VA seconds, not
minutes (the wake-up tries again only a server that answers it is busy: tasks/prefect/wake.py).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy.exc import OperationalError

from db.session import transaction
from db.settings import get_settings
from tasks.onboarding import records
from tasks.prefect.names import onboarding_run_name
from tasks.prefect.offline import stay_offline

T = TypeVar("T")

WAITING = "Suspended"


def configure_prefect_client() -> str:
    """Point Prefect's client at the configured server (never an ephemeral one); return the URL."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        # A Prefect profile may name the server; otherwise the local `make run` server.
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url or get_settings().prefect_api_url
        os.environ["PREFECT_API_URL"] = url
    stay_offline()
    return url


BUSY = frozenset({502, 503, 504})  # the server, or a proxy before it, is busy: try again
BUSY_RETRIES_S = (0.5, 1.0, 2.0, 4.0)  # the pauses before each new try; 7.5 s at most


def answered_status(exc: BaseException) -> int | None:
    """The HTTP status Prefect answered a failed call with, if it answered at all."""
    # httpx and Prefect's client carry the status on the response; urllib on the error itself
    status = getattr(getattr(exc, "response", None), "status_code", None) or getattr(
        exc, "code", None)
    return status if isinstance(status, int) else None


def when_busy_again(call: Callable[[], T]) -> T:
    """`call()`, tried again after a busy answer (`BUSY`: Prefect answers 503 when its SQLite
    database is locked) a few times within seconds; a call that times out is not tried again.
    Only for calls a second try cannot double: a resume (a repeat is answered ABORT), a read,
    a run created under an idempotency key."""
    for pause in (*BUSY_RETRIES_S, None):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a busy answer
            if pause is None or answered_status(exc) not in BUSY:
                raise
        time.sleep(pause * (0.5 + random.random()))  # jitter: callers colliding retry apart
    raise AssertionError("not reached")  # the last try returns or raises


@contextmanager
def prefect_settings() -> Iterator[None]:
    """Prefect client settings from the environment as it is now.

    Prefect reads its settings once, at import; a long-lived process (a served flow, a test
    session) may have imported it before PREFECT_API_URL was set, so apply them explicitly.
    """
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_REQUEST_TIMEOUT,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED,
        temporary_settings,
    )

    updates: dict[Any, Any] = {
        PREFECT_API_URL: configure_prefect_client(),
        # Prefect's defaults (60 s per request, 5 retries with backoff) let a server that
        # accepts connections but never answers hold a command for ~7 minutes.
        PREFECT_API_REQUEST_TIMEOUT: get_settings().prefect_timeout,
        PREFECT_CLIENT_MAX_RETRIES: 0,
        PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED: False,
    }
    if os.environ.get("PREFECT_API_AUTH_STRING"):
        updates[PREFECT_API_AUTH_STRING] = os.environ["PREFECT_API_AUTH_STRING"]
    with temporary_settings(updates=updates):
        yield


def server_reachable(timeout: float = 2.0) -> bool:
    """True when the Prefect API answers its health check."""
    import httpx

    url = configure_prefect_client().rstrip("/")
    try:
        return httpx.get(f"{url}/health", timeout=timeout,
                         headers=api_headers()).status_code == 200
    except httpx.HTTPError:
        return False


def api_headers() -> dict[str, str]:
    """The basic-auth header PREFECT_API_AUTH_STRING asks for, for a plain HTTP call."""
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    if not auth:
        return {}
    import base64

    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def unreachable_note() -> str:
    """What the VA is told when Prefect is down."""
    return (f"Prefect server not reachable at {configure_prefect_client()}; the fact is recorded "
            "and the reconcile flow will catch the run up once the server is back")


def no_answer(exc: BaseException) -> str:
    """Prefect took the call but did not answer it in time, or answered with an error."""
    status = answered_status(exc)
    if status is not None:  # it answered, with an error (a busy server says 503)
        return f"Prefect server at {configure_prefect_client()} answered HTTP {status}"
    return (f"Prefect server at {configure_prefect_client()} did not answer within "
            f"{get_settings().prefect_timeout:g} s ({type(exc).__name__})")


def no_answer_note(exc: BaseException) -> str:
    """What the VA is told when a recorded fact's run could not be reached."""
    return f"{no_answer(exc)}; the fact is recorded and the reconcile flow will catch the run up"


def prefect_failures() -> tuple[type[BaseException], ...]:
    """What a Prefect call raises when the server is slow, gone or refuses (never a bug)."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    return (httpx.HTTPError, PrefectHTTPStatusError, OSError)


def ui_url(flow_run_id: UUID | str) -> str:
    """The Prefect UI page of a flow run (PREFECT_UI_URL, else the API's address without /api,
    as Prefect derives it; read from the environment: importing Prefect costs ~2 s)."""
    base = os.environ.get("PREFECT_UI_URL") or configure_prefect_client().removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


def create_run(onboarding_id: int, attempt: int = 0) -> str:
    """Create the client's run from its deployment now; idempotent per onboarding+attempt.

    Only the pacer calls this; everything else calls tasks.prefect.pacing.start_run.
    Raises what `prefect_failures()` names when the server does not answer, so the pacer keeps
    the queued start (the run may exist: the retry's idempotency key finds it).
    """
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    with transaction() as session:
        ob = records.get_onboarding(session, onboarding_id)
        tags = [f"segment:{ob.segment}", f"offer:{ob.offer}", f"onboarding:{ob.id}",
                *(["demo"] if ob.demo else [])]
    name = onboarding_run_name(onboarding_id)
    with prefect_settings():
        run: FlowRun = when_busy_again(lambda: run_deployment(  # type: ignore[assignment]
            get_settings().onboarding_deployment,
            parameters={"onboarding_id": onboarding_id},
            timeout=0, tags=tags, flow_run_name=name, as_subflow=False,
            # The server returns the existing run for a known key, so a retried start
            # reuses it.
            idempotency_key=f"onboarding-{onboarding_id}"
            + (f"-restart-{attempt}" if attempt else ""),
        ))
    try:
        remember_run(onboarding_id, str(run.id))
    except OperationalError:
        # Busy database: the started run is found again by its idempotency key on reconcile.
        return f"{ui_url(run.id)} (linked to the record by the next reconcile)"
    return ui_url(run.id)


def remember_run(onboarding_id: int, flow_run_id: str) -> None:
    """Store the run id on the onboarding (plain column; no guardrail involved). The row is
    locked and re-read, so two passes linking the same run at once log it once."""
    with transaction() as session:
        ob = records.get_onboarding(session, onboarding_id, for_update=True)
        if ob.flow_run_id != flow_run_id:
            ob.flow_run_id = flow_run_id
            records.log_event(session, "flow_run_linked", actor="handoff",
                              onboarding_id=onboarding_id, flow_run_id=flow_run_id)


def cancel_runs(flow_run_ids: list[str], reason: str) -> str:
    """Cancel these runs (their clients are gone); best effort, and say what happened."""
    if not flow_run_ids:
        return "no runs to cancel"
    if not server_reachable():
        return f"{unreachable_note()}; cancel their {len(flow_run_ids)} runs in the UI"
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelled

    cancelled = 0
    with prefect_settings(), get_client(sync_client=True) as client:
        for run_id in flow_run_ids:
            try:
                client.set_flow_run_state(UUID(run_id), Cancelled(message=reason), force=True)
                cancelled += 1
            except ObjectNotFound:
                pass  # already deleted in the UI
    return f"{cancelled} runs cancelled"
